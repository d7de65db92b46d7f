"""The books of a gateway database checked against themselves and against its LND node.

`check_books()` fails a test if money was created or lost anywhere a reviewer would look:

- inside the ledger: every transaction sums to zero, every account's stored balance equals
  the sum of its entries, and no account but the outside world is negative;
- prepaid credit: no credit holds less than nothing or more than it was bought for, each
  paid credit is booked once, what each spent is exactly its spends in the ledger, and
  each tenant's credit liability is exactly what its paid credits have left;
- against Lightning: every invoice of this database that the node says is settled is booked
  exactly once, for exactly what the node received, and nothing the node did not receive
  is booked; every withdrawal the node paid is settled in the ledger with the fee the node
  reports, and every withdrawal released was not paid by the node.

It reads the database directly, SQLite or PostgreSQL (tests/sql.py: pass the gateway's
config, or a SQLite path or postgresql:// URL), and asks LND about each payment hash, so it
works for in-process gateways and gateway processes alike, on either engine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from gateway.persistence.database import Database
from lightning.lnd import LndRestClient
from lightning.models import InvoiceState
from tests.sql import Where, opened, rows

INCOMING = ("chunk_sale", "plan_purchase", "credit_purchase")


@dataclass
class Books:
    """What the check saw, for tests that also count (e.g. exactly-once bookings)."""

    kinds: Counter[str] = field(default_factory=Counter)  # ledger transactions per kind
    received_msat: int = 0  # what LND received for this database's invoices
    booked_in_msat: int = 0  # what the ledger booked as received
    paid_out_msat: int = 0  # withdrawals LND paid, amount + fee
    booked_out_msat: int = 0  # withdrawals the ledger settled, amount + fee
    balances: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return self.kinds[kind]


async def ledger_problems(db: Database) -> list[str]:
    """Internal consistency only (no LND): the empty list when the books balance."""
    problems = []
    for tx_id, kind, ref, total in await rows(
        db,
        "SELECT t.id, t.kind, t.reference, SUM(e.amount_msat) FROM ledger_transactions t"
        " JOIN ledger_entries e ON e.tx_id = t.id GROUP BY t.id HAVING SUM(e.amount_msat) != 0",
    ):
        problems.append(f"transaction {tx_id} ({kind} {ref}) sums to {total}")
    for account, stored, summed in await rows(
        db,
        "SELECT COALESCE(b.account, e.account), b.balance_msat, e.total FROM"
        " (SELECT account, SUM(amount_msat) AS total FROM ledger_entries GROUP BY account) e"
        " LEFT JOIN balances b ON b.account = e.account"
        " UNION ALL SELECT b.account, b.balance_msat, NULL FROM balances b"
        " WHERE b.account NOT IN (SELECT account FROM ledger_entries)",
    ):
        if stored != summed:
            problems.append(f"{account}: stored balance {stored}, entries sum to {summed}")
    for account, value in await rows(
        db,
        "SELECT account, balance_msat FROM balances"
        " WHERE balance_msat < 0 AND account NOT LIKE 'external:%'",
    ):
        problems.append(f"{account} is overdrawn: {value}")
    return problems + await credit_problems(db)


async def credit_problems(db: Database) -> list[str]:
    """Prepaid credit against the ledger: the empty list when it agrees."""
    problems = []
    purchases = Counter(
        str(r[0])
        for r in await rows(
            db, "SELECT reference FROM ledger_transactions WHERE kind = 'credit_purchase'"
        )
    )
    spent: Counter[str] = Counter()
    spends: Counter[str] = Counter()
    for ref, amount in await rows(
        db,
        "SELECT t.reference, e.amount_msat FROM ledger_transactions t"
        " JOIN ledger_entries e ON e.tx_id = t.id"
        " WHERE t.kind = 'credit_spend' AND e.account LIKE 'liability:credit:%'",
    ):
        payment_hash = str(ref).split(":")[0]
        spent[payment_hash] -= int(amount)
        spends[payment_hash] += 1
    owed: Counter[str] = Counter()
    for raw_hash, tenant, state, amount, remaining, n in await rows(
        db,
        "SELECT payment_hash, tenant_id, state, amount_msat, remaining_msat, spends FROM credits",
    ):
        ref = bytes(raw_hash).hex()
        if not 0 <= remaining <= amount:
            problems.append(f"credit {ref} holds {remaining} of {amount}")
        booked = purchases.pop(ref, 0)
        if state == "settled":
            owed[str(tenant)] += int(remaining)
            if booked != 1:
                problems.append(f"credit {ref} is paid but booked {booked} times")
            if spent[ref] != amount - remaining or spends[ref] != n:
                problems.append(
                    f"credit {ref}: {amount - remaining} msat spent in {n} spends, the ledger "
                    f"has {spent[ref]} msat in {spends[ref]}"
                )
        elif booked or remaining or n:
            problems.append(f"credit {ref} is {state} but booked, holding or spent")
    for ref in purchases:
        problems.append(f"credit purchase {ref} booked with no credit row")
    for account, value in await rows(
        db,
        "SELECT account, balance_msat FROM balances WHERE account LIKE 'liability:credit:%'",
    ):
        tenant = str(account).removeprefix("liability:credit:")
        held = owed.pop(tenant, 0)
        if int(value) != held:
            problems.append(f"{account} is {value}, its paid credits hold {held}")
    problems += [f"credits of {t} hold {v} with no liability booked" for t, v in owed.items() if v]
    return problems


async def check_books(
    where: Where, lnd: LndRestClient, tenants: set[str] | None = None, timeout_s: float = 15
) -> Books:
    """`books_once()` until it passes: a payment LND just settled is booked a moment
    later (the invoice stream); anything still wrong after `timeout_s` fails the test."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await books_once(where, lnd, tenants)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def books_once(where: Where, lnd: LndRestClient, tenants: set[str] | None = None) -> Books:
    """Asserts the books balance and match LND (see the module docstring); returns them.
    `tenants`: only the invoices and withdrawals of these tenants are on `lnd`."""
    async with opened(where) as db:
        return await _books(db, lnd, tenants)


async def _books(db: Database, lnd: LndRestClient, tenants: set[str] | None) -> Books:
    problems = await ledger_problems(db)
    books = Books()
    for kind, n in await rows(db, "SELECT kind, COUNT(*) FROM ledger_transactions GROUP BY kind"):
        books.kinds[str(kind)] = int(n)
    books.balances = {
        str(a): int(v) for a, v in await rows(db, "SELECT account, balance_msat FROM balances")
    }

    def mine(tenant: object) -> bool:
        return tenants is None or tenant in tenants

    # Incoming: every invoice this database issued, as LND sees it.
    booked_in = {
        str(ref): -int(amount)
        for ref, amount in await rows(
            db,
            "SELECT t.reference, e.amount_msat FROM ledger_transactions t"
            " JOIN ledger_entries e ON e.tx_id = t.id"
            f" WHERE t.kind IN {INCOMING} AND e.account LIKE 'external:%'",
        )
    }
    issued = await rows(
        db,
        "SELECT payment_hash, state, amount_msat, tenant_id FROM invoices"
        " UNION ALL SELECT payment_hash, state, amount_msat, tenant_id FROM plan_invoices"
        " UNION ALL SELECT payment_hash, state, amount_msat, tenant_id FROM credits",
    )
    for raw_hash, state, amount, tenant in issued:
        if not mine(tenant):
            continue
        payment_hash = bytes(raw_hash)
        ref = payment_hash.hex()
        invoice = await lnd.lookup_invoice(payment_hash)
        if invoice.state == InvoiceState.SETTLED:
            books.received_msat += invoice.amount_paid_msat
            if state != "settled":
                problems.append(f"invoice {ref} settled on LND but {state} here")
            if booked_in.get(ref) != invoice.amount_paid_msat:
                problems.append(
                    f"invoice {ref}: LND received {invoice.amount_paid_msat}, "
                    f"ledger booked {booked_in.get(ref)}"
                )
            if invoice.amount_paid_msat != amount:
                problems.append(f"invoice {ref}: paid {invoice.amount_paid_msat} of {amount}")
        elif state == "settled" or ref in booked_in:
            problems.append(f"invoice {ref} booked here but {invoice.state} on LND")
        if ref in booked_in:
            books.booked_in_msat += booked_in[ref]

    # Outgoing: every withdrawal, as LND's payment record sees it.
    settled_out = {
        str(ref): int(amount)
        for ref, amount in await rows(
            db,
            "SELECT t.reference, e.amount_msat FROM ledger_transactions t"
            " JOIN ledger_entries e ON e.tx_id = t.id"
            " WHERE t.kind = 'withdrawal_settle' AND e.account LIKE 'external:%'",
        )
    }
    released = {
        str(r[0])
        for r in await rows(
            db, "SELECT reference FROM ledger_transactions WHERE kind = 'withdrawal_release'"
        )
    }
    for wid, raw_hash, state, amount, fee_paid, tenant in await rows(
        db,
        "SELECT id, payment_hash, state, amount_msat, fee_paid_msat, tenant_id FROM withdrawals",
    ):
        if not mine(tenant):
            continue
        wid = str(wid)
        status = await lnd.track_payment(bytes(raw_hash))
        if status.state == "succeeded":
            out = int(amount) + status.fee_msat
            books.paid_out_msat += out
            if state != "succeeded" or settled_out.get(wid) != out or fee_paid != status.fee_msat:
                problems.append(
                    f"withdrawal {wid}: LND paid {out} (fee {status.fee_msat}), here {state} "
                    f"with {settled_out.get(wid)} booked (fee {fee_paid})"
                )
        elif wid in settled_out:
            problems.append(f"withdrawal {wid} settled here but {status.state} on LND")
        if wid in released and status.state == "succeeded":
            problems.append(f"withdrawal {wid} was released but LND paid it")
        if wid in released and wid in settled_out:
            problems.append(f"withdrawal {wid} both released and settled")
        books.booked_out_msat += settled_out.get(wid, 0)

    assert not problems, "the books do not balance:\n  " + "\n  ".join(problems)
    assert books.received_msat == books.booked_in_msat
    assert books.paid_out_msat == books.booked_out_msat
    return books


async def bookings(where: Where, reference: str) -> int:
    """How many ledger transactions name this payment hash or withdrawal id (either engine)."""
    async with opened(where) as db:
        [(n,)] = await rows(
            db, "SELECT COUNT(*) FROM ledger_transactions WHERE reference = ?", reference
        )
    return int(n)
