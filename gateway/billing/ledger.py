"""Double-entry ledger rules (pure).

Every movement of money is a `Transaction` whose entries sum to zero, so money is never
created or lost inside the gateway: it only enters or leaves through `LIGHTNING`.
Amounts are integer millisatoshis; positive credits an account, negative debits it.
Storing transactions and balances is the caller's job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CREDIT",
    "HOLD_PREFIX",
    "KIND_CHUNK_SALE",
    "KIND_CREDIT_PURCHASE",
    "KIND_CREDIT_SPEND",
    "KIND_PLAN_PURCHASE",
    "KIND_SIGNUP",
    "KIND_WITHDRAWAL_HOLD",
    "KIND_WITHDRAWAL_RELEASE",
    "KIND_WITHDRAWAL_SETTLE",
    "LIGHTNING",
    "MAX_BPS",
    "OPERATOR_FEES",
    "OPERATOR_PLANS",
    "OPERATOR_SIGNUPS",
    "USER_PREFIX",
    "Entry",
    "InsufficientFunds",
    "LedgerError",
    "Transaction",
    "apply",
    "chunk_sale",
    "credit_purchase",
    "credit_spend",
    "fee_reserve_msat",
    "plan_purchase",
    "signup_payment",
    "tenant_house_accounts",
    "user_account",
    "withdrawal_hold",
    "withdrawal_hold_account",
    "withdrawal_release",
    "withdrawal_settle",
]

LIGHTNING = "external:lightning"
OPERATOR_FEES = "operator:fees"
OPERATOR_PLANS = "operator:plans"
OPERATOR_SIGNUPS = "operator:signups"
# Prepaid credit not spent yet: what the operator owes its holders (a liability, so it
# never runs negative: a spend that would overdraw it is refused).
CREDIT = "liability:credit"
# The accounts each tenant has its own copy of (for_tenant appends ":<tenant>").
_HOUSE_ACCOUNTS = (LIGHTNING, OPERATOR_FEES, OPERATOR_PLANS, OPERATOR_SIGNUPS, CREDIT)

KIND_CHUNK_SALE = "chunk_sale"
KIND_PLAN_PURCHASE = "plan_purchase"
KIND_SIGNUP = "signup"
KIND_WITHDRAWAL_HOLD = "withdrawal_hold"
KIND_WITHDRAWAL_SETTLE = "withdrawal_settle"
KIND_WITHDRAWAL_RELEASE = "withdrawal_release"
KIND_CREDIT_PURCHASE = "credit_purchase"
KIND_CREDIT_SPEND = "credit_spend"

MAX_BPS = 10_000

USER_PREFIX = "user:"
HOLD_PREFIX = "hold:withdrawal:"
_HEX64_RE = re.compile(r"[0-9a-fA-F]{64}")


class LedgerError(ValueError):
    """A transaction or builder input breaks a ledger rule."""


class InsufficientFunds(LedgerError):
    """Applying a transaction would overdraw `account`."""

    def __init__(self, account: str, balance: int, needed: int) -> None:
        super().__init__(f"{account} holds {balance} msat but {needed} msat are needed")
        self.account = account
        self.balance = balance
        self.needed = needed


def _is_int(value: object) -> bool:
    # bool is an int subclass; True must never pass for 1 msat.
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value: int) -> int:
    if not _is_int(value) or value <= 0:
        raise LedgerError(f"{name} must be a positive integer, got {value!r}")
    return value


def _non_negative(name: str, value: int) -> int:
    if not _is_int(value) or value < 0:
        raise LedgerError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _bps(name: str, value: int) -> int:
    if not _is_int(value) or not 0 <= value <= MAX_BPS:
        raise LedgerError(f"{name} must be an integer in 0..{MAX_BPS}, got {value!r}")
    return value


def _identifier(name: str, value: str) -> str:
    # Whitespace would make account names ambiguous in logs and lookups.
    if not isinstance(value, str) or not value or value != value.strip():
        raise LedgerError(f"{name} must be a non-empty string without surrounding spaces")
    return value


def _payment_hash(value: str) -> str:
    if not isinstance(value, str) or not _HEX64_RE.fullmatch(value):
        raise LedgerError("payment hash must be 64 hex characters")
    # One spelling per hash, so a reference can be used as a uniqueness key.
    return value.lower()


@dataclass(frozen=True)
class Entry:
    """One leg of a transaction: credit (positive) or debit (negative) `account`."""

    account: str
    amount_msat: int


@dataclass(frozen=True)
class Transaction:
    """A balanced set of entries; construction fails unless the rules hold."""

    kind: str
    reference: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        _identifier("kind", self.kind)
        _identifier("reference", self.reference)
        if not isinstance(self.entries, tuple):
            raise LedgerError("entries must be a tuple")
        if len(self.entries) < 2:
            raise LedgerError("a transaction needs at least two entries")
        seen: set[str] = set()
        for entry in self.entries:
            if not isinstance(entry, Entry):
                raise LedgerError(f"not an Entry: {entry!r}")
            _identifier("account", entry.account)
            if not _is_int(entry.amount_msat) or entry.amount_msat == 0:
                raise LedgerError(f"{entry.account}: amount must be a non-zero integer")
            if entry.account in seen:
                raise LedgerError(f"{entry.account} appears twice")
            seen.add(entry.account)
        total = sum(entry.amount_msat for entry in self.entries)
        if total != 0:
            raise LedgerError(f"entries sum to {total} msat, not 0")


def user_account(account_id: str) -> str:
    return USER_PREFIX + _identifier("account id", account_id)


def withdrawal_hold_account(withdrawal_id: str) -> str:
    return HOLD_PREFIX + _identifier("withdrawal id", withdrawal_id)


def _tx(kind: str, reference: str, *entries: tuple[str, int]) -> Transaction:
    # Builders may compute a zero leg (no fee, no change); such legs are simply left out.
    legs = tuple(Entry(account, amount) for account, amount in entries if amount != 0)
    return Transaction(kind, reference, legs)


def chunk_sale(
    payment_hash_hex: str, owner_account_id: str, amount_msat: int, fee_bps: int
) -> Transaction:
    """A paid chunk invoice: the operator keeps `fee_bps`, the uploader earns the rest."""
    reference = _payment_hash(payment_hash_hex)
    owner = user_account(owner_account_id)
    _positive("amount_msat", amount_msat)
    _bps("fee_bps", fee_bps)
    # Floor: the uploader gets any rounding remainder.
    fee = amount_msat * fee_bps // MAX_BPS
    return _tx(
        KIND_CHUNK_SALE,
        reference,
        (LIGHTNING, -amount_msat),
        (OPERATOR_FEES, fee),
        (owner, amount_msat - fee),
    )


def credit_purchase(payment_hash_hex: str, amount_msat: int) -> Transaction:
    """A paid credit invoice: the money comes in and is owed to the credit's holder until
    spent."""
    reference = _payment_hash(payment_hash_hex)
    _positive("amount_msat", amount_msat)
    return _tx(KIND_CREDIT_PURCHASE, reference, (LIGHTNING, -amount_msat), (CREDIT, amount_msat))


def credit_spend(
    payment_hash_hex: str,
    spend_number: int,
    owner_account_id: str | None,
    amount_msat: int,
    fee_bps: int,
) -> Transaction:
    """Chunks bought with credit: the credit pays the uploader and the operator's share
    exactly as a chunk invoice would (:func:`chunk_sale`); a file whose uploader is gone
    pays the operator only. The reference is the credit's payment hash and the spend's
    number on it (``<hash>:<n>``), so each spend is booked once."""
    reference = f"{_payment_hash(payment_hash_hex)}:{_positive('spend_number', spend_number)}"
    _positive("amount_msat", amount_msat)
    _bps("fee_bps", fee_bps)
    if owner_account_id is None:
        return _tx(
            KIND_CREDIT_SPEND, reference, (CREDIT, -amount_msat), (OPERATOR_FEES, amount_msat)
        )
    owner = user_account(owner_account_id)
    fee = amount_msat * fee_bps // MAX_BPS  # floor, as for a chunk sale
    return _tx(
        KIND_CREDIT_SPEND,
        reference,
        (CREDIT, -amount_msat),
        (OPERATOR_FEES, fee),
        (owner, amount_msat - fee),
    )


def plan_purchase(payment_hash_hex: str, amount_msat: int) -> Transaction:
    """A paid plan invoice: all of it goes to the operator."""
    reference = _payment_hash(payment_hash_hex)
    _positive("amount_msat", amount_msat)
    return _tx(
        KIND_PLAN_PURCHASE, reference, (LIGHTNING, -amount_msat), (OPERATOR_PLANS, amount_msat)
    )


def signup_payment(payment_hash_hex: str, amount_msat: int) -> Transaction:
    """A paid signup invoice (the tenant's price for opening an account): the operator's."""
    reference = _payment_hash(payment_hash_hex)
    _positive("amount_msat", amount_msat)
    return _tx(KIND_SIGNUP, reference, (LIGHTNING, -amount_msat), (OPERATOR_SIGNUPS, amount_msat))


def _held(
    withdrawal_id: str, account_id: str, amount_msat: int, fee_reserve_msat: int
) -> tuple[str, str, int]:
    """(hold account, user account, amount + reserve) of a withdrawal, checked."""
    total = _positive("amount_msat", amount_msat) + _non_negative(
        "fee_reserve_msat", fee_reserve_msat
    )
    return withdrawal_hold_account(withdrawal_id), user_account(account_id), total


def withdrawal_hold(
    withdrawal_id: str, account_id: str, amount_msat: int, fee_reserve_msat: int
) -> Transaction:
    """Set aside amount + routing-fee reserve before paying out, so it can't be spent twice."""
    hold, user, total = _held(withdrawal_id, account_id, amount_msat, fee_reserve_msat)
    return _tx(KIND_WITHDRAWAL_HOLD, withdrawal_id, (user, -total), (hold, total))


def withdrawal_settle(
    withdrawal_id: str,
    account_id: str,
    amount_msat: int,
    fee_reserve_msat: int,
    fee_paid_msat: int,
) -> Transaction:
    """The payout succeeded: amount + actual fee leave, the unused reserve goes back."""
    hold = withdrawal_hold_account(withdrawal_id)
    user = user_account(account_id)
    _positive("amount_msat", amount_msat)
    _non_negative("fee_reserve_msat", fee_reserve_msat)
    _non_negative("fee_paid_msat", fee_paid_msat)
    if fee_paid_msat > fee_reserve_msat:
        # The caller caps the routing fee at the reserve; exceeding it means a bug upstream.
        raise LedgerError(
            f"fee paid {fee_paid_msat} msat exceeds the reserve {fee_reserve_msat} msat"
        )
    return _tx(
        KIND_WITHDRAWAL_SETTLE,
        withdrawal_id,
        (hold, -(amount_msat + fee_reserve_msat)),
        (LIGHTNING, amount_msat + fee_paid_msat),
        (user, fee_reserve_msat - fee_paid_msat),
    )


def withdrawal_release(
    withdrawal_id: str, account_id: str, amount_msat: int, fee_reserve_msat: int
) -> Transaction:
    """The payout failed: everything held goes back to the user."""
    hold, user, total = _held(withdrawal_id, account_id, amount_msat, fee_reserve_msat)
    return _tx(KIND_WITHDRAWAL_RELEASE, withdrawal_id, (hold, -total), (user, total))


def is_external(account: str) -> bool:
    """The outside world, whole or one tenant's share of it ("external:lightning:<t>")."""
    return account == LIGHTNING or account.startswith(LIGHTNING + ":")


def apply(balances: Mapping[str, int], tx: Transaction) -> dict[str, int]:
    """New balances after `tx`; `balances` is not modified. Nothing is applied on failure."""
    result = dict(balances)
    for entry in tx.entries:
        before = result.get(entry.account, 0)
        after = before + entry.amount_msat
        # Only LIGHTNING (the outside world) runs negative, by what has come in overall.
        if after < 0 and entry.amount_msat < 0 and not is_external(entry.account):
            raise InsufficientFunds(entry.account, before, -entry.amount_msat)
        result[entry.account] = after
    return result


def fee_reserve_msat(amount_msat: int, fee_limit_bps: int, min_fee_msat: int) -> int:
    """Routing-fee reserve for a payout: `fee_limit_bps` of it rounded up, at least `min_fee`."""
    _non_negative("amount_msat", amount_msat)
    _non_negative("fee_limit_bps", fee_limit_bps)
    _non_negative("min_fee_msat", min_fee_msat)
    # Ceiling, in integers: the reserve must cover the limit the node is given.
    return max(min_fee_msat, -(-amount_msat * fee_limit_bps // MAX_BPS))


def tenant_house_accounts(tenant_id: str) -> tuple[str, ...]:
    """A tenant's own outside-world and operator accounts, as for_tenant names them. With
    its users' and their withdrawal holds, they are the tenant's books, which sum to zero
    on their own."""
    _identifier("tenant_id", tenant_id)
    return tuple(f"{account}:{tenant_id}" for account in _HOUSE_ACCOUNTS)


def for_tenant(tx: Transaction, tenant_id: str) -> Transaction:
    """The same movement with the operator and outside-world accounts made the tenant's
    own ("operator:fees" → "operator:fees:<tenant>"), so each brand's books stand alone.
    User and hold accounts are already unique across tenants."""
    _identifier("tenant_id", tenant_id)

    def scoped(account: str) -> str:
        if account in _HOUSE_ACCOUNTS:
            return f"{account}:{tenant_id}"
        return account

    return Transaction(
        tx.kind,
        tx.reference,
        tuple(Entry(scoped(e.account), e.amount_msat) for e in tx.entries),
    )
