"""What every engine keeps in the repository the same way: sealed records, verify results."""
