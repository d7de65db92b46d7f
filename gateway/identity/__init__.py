"""Who an account is: usernames, passwords, and accounts restored from the old service.

Pure rules (`usernames`, `legacy_hashes`, `import_rows`) sit beside the import engine
(`importer`, SQLite) and its command line (`import_cli`, `bitcache-admin import`).
"""
