"""Who an account is: usernames, passwords, and accounts restored from the old service.

Pure rules (`usernames`, `legacy_hashes`, `import_rows`) sit beside the command line
(`import_cli`, `bitcache-admin import`); the import engine's SQL is in
`gateway.persistence.legacy_import`.
"""
