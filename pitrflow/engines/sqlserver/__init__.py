"""SQL Server engine: msdb backup history, a pure restore planner and T-SQL builders.

Nothing here talks to a server: the planner works on recorded msdb rows so every
decision can be tested without SQL Server, and the builders only return text.
"""
