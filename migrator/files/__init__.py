"""The migration files: the SQL lexer, one file, other tools' folder formats, the folder.
It never connects to a database."""
