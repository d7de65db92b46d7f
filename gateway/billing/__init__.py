"""Money: prices, quotas, the ledger rules, selling tokens, settling invoices, withdrawals."""
