"""PostgreSQL WAL: segment names, timelines, the owned slot, shipping and fetching."""
