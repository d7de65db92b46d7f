"""What credit may be bought, and why a spend was refused (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CreditState", "check_purchase", "refusal"]


@dataclass(frozen=True)
class CreditState:
    """A credit as stored: whose, whether paid, how much of it is left, until when."""

    tenant_id: str
    state: str  # 'open', 'settled' or 'canceled'
    amount_msat: int
    remaining_msat: int
    expires_at: int


def check_purchase(amount_msat: int, max_msat: int) -> None:
    """ValueError unless ``amount_msat`` is a whole number of msat in 1..max_msat."""
    if max_msat <= 0:
        raise ValueError("this gateway sells no credit")
    if isinstance(amount_msat, bool) or not isinstance(amount_msat, int):
        raise ValueError("amount_msat must be an integer")
    if not 1 <= amount_msat <= max_msat:
        raise ValueError(f"amount_msat must be between 1 and {max_msat}")


def refusal(credit: CreditState | None, tenant_id: str, amount_msat: int, now: int) -> str:
    """Why a spend of ``amount_msat`` on ``tenant_id``'s file at ``now`` cannot be paid
    from ``credit`` (the spend itself is the database's conditional UPDATE; this only
    explains its refusal to the holder)."""
    if credit is None or credit.tenant_id != tenant_id:
        return "no such credit here"
    if credit.state != "settled":
        return "the credit's invoice is not paid"
    if credit.expires_at <= now:
        return "the credit has expired"
    if credit.remaining_msat < amount_msat:
        return f"the credit holds {credit.remaining_msat} msat, this range costs {amount_msat} msat"
    return "the credit changed meanwhile; try again"
