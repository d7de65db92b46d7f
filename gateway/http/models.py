"""The JSON bodies of the HTTP API as pydantic models: what requests carry and responses say.

Request models are validated by the handlers (`params.json_model`); response models describe
what the handlers answer, so that /v1/openapi.json is generated from one source and
schemathesis can hold every response to it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.billing.quota import Plan

# ---- requests ---------------------------------------------------------------------------

# A sealed manifest is small; anything near this is not one.
MAX_MANIFEST_BYTES = 64 * 1024


class CreateFileBody(BaseModel):
    """POST /v1/files: a file's public header, its sealed manifest and its price per chunk."""

    model_config = ConfigDict(extra="forbid")
    header: dict[str, Any] = Field(description="FileHeader JSON (docs/format.md §7)")
    manifest: str = Field(
        min_length=1, max_length=MAX_MANIFEST_BYTES * 2, description="sealed manifest, base64url"
    )
    price_msat: int | None = Field(default=None, ge=0, le=100_000_000)


class BuyPlanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan_id: str = Field(min_length=1, max_length=32)


class WithdrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invoice: str = Field(min_length=20, max_length=4096, description="BOLT 11 with an amount")


# Logins (docs/api.md "Login"): hex, so a proof or salt is never mistaken for text.
_USERNAME = Field(min_length=1, max_length=128)
_PROOF = Field(pattern=r"^[0-9a-fA-F]{64}$", description="argon2id(password, salt), 32 bytes hex")


class CreateAccountBody(BaseModel):
    """POST /v1/accounts (all optional): a username, with the client-made login salt and the
    proof derived under it, lets the account log in later."""

    model_config = ConfigDict(extra="forbid")
    username: str | None = Field(default=None, min_length=1, max_length=128)
    proof: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    login_salt: str | None = Field(
        default=None, pattern=r"^[0-9a-fA-F]{32}$", description="16 random bytes, hex"
    )


class LoginSaltBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = _USERNAME


class LoginKdf(BaseModel):
    name: Literal["argon2id"]
    opslimit: int
    memlimit: int


class LoginSalt(BaseModel):
    salt: str = Field(description="16 bytes, hex")
    kdf: LoginKdf
    proof_bytes: int


class LoginBody(BaseModel):
    """POST /v1/login: `proof` alone; or, at a restored account's first login, `password`
    (checked against the old service's hash) with the new `proof` that replaces it."""

    model_config = ConfigDict(extra="forbid")
    username: str = _USERNAME
    proof: str = _PROOF
    password: str | None = Field(default=None, min_length=1, max_length=1024)


class LoggedIn(BaseModel):
    account_id: str
    api_key: str
    tenant: str
    upgraded: bool = Field(description="the old service's password hash was just replaced")
    note: str


class CreditBody(BaseModel):
    """POST /v1/credit: how much credit to buy (at most the gateway's credit_max_msat)."""

    model_config = ConfigDict(extra="forbid")
    amount_msat: int = Field(ge=1, le=100_000_000_000, strict=True)


class CreditBalance(BaseModel):
    amount_msat: int = Field(description="what the credit was bought for")
    remaining_msat: int = Field(description="what is left to spend")
    valid_until: int = Field(description="unix seconds; spendable before then")
    state: Literal["open", "settled", "canceled"]


class PreimageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    macaroon: str = Field(min_length=10, max_length=64 * 1024)


# The vault (docs/format.md §14): opaque objects of at most 1 MiB, in batches.
MAX_OBJECT_BYTES = 1 << 20
MAX_BATCH_OBJECTS = 2000
OBJECT_ID_PATTERN = r"[a-z2-7]{25}[aeimquy4]"  # canonical base32 of 16 bytes
MAX_GC_FILES = 1000  # chunk files one vault write may delete


class PutKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wrapped: dict[str, Any]
    create_only: bool = False


class ObjectWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=OBJECT_ID_PATTERN)
    data: str = Field(min_length=1, max_length=(MAX_OBJECT_BYTES * 4) // 3 + 4)


class WriteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    if_counter: int = Field(ge=0)
    put: list[ObjectWrite] = Field(default_factory=list, max_length=MAX_BATCH_OBJECTS)
    delete: list[str] = Field(default_factory=list, max_length=MAX_BATCH_OBJECTS)
    # The vault's deletion log, sealed by the client (docs/format.md §14.9): replaced if given.
    log: str | None = Field(default=None, min_length=1, max_length=(MAX_OBJECT_BYTES * 4) // 3 + 4)
    # The account's chunk files to delete in the same transaction (garbage collection).
    delete_files: list[str] = Field(default_factory=list, max_length=MAX_GC_FILES)


# ---- responses --------------------------------------------------------------------------


class Problem(BaseModel):
    """RFC 9457 problem details; some problems add members of their own."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str


class ComponentHealth(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool
    # A failed check says only what kind of failure: never the dependency's message.
    error: Literal["unreachable", "timeout", "error"] | None = None


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    gateway: ComponentHealth
    lnd: ComponentHealth
    kubo: ComponentHealth
    database: ComponentHealth


class FileState(BaseModel):
    file_id: str
    state: Literal["uploading", "complete"]
    header: dict[str, Any]
    manifest: str
    chunk_count: int
    price_msat: int
    chunks_present: int
    missing: list[int]
    owned: bool
    link_base: str


class ChunkStored(BaseModel):
    index: int
    cid: str


class BatchItemState(BaseModel):
    file_id: str
    state: Literal["stored", "exists"] = Field(
        description="stored by this request, or already complete before it (not stored again)"
    )


class BatchStored(BaseModel):
    """POST /v1/files/batch: every item's outcome, in the request's order."""

    items: list[BatchItemState]
    stored: int
    existing: int


class FileDeleted(BaseModel):
    file_id: str
    state: Literal["deleted"]
    freed_bytes: int
    chunks: int


class AccountCreated(BaseModel):
    account_id: str
    api_key: str
    tenant: str
    username: str | None = None
    note: str


class PlanList(BaseModel):
    plans: list[Plan]


class PlanInvoice(BaseModel):
    plan: Plan
    invoice: str
    payment_hash: str
    amount_msat: int


class ActivePlan(BaseModel):
    plan_id: str
    quota_bytes: int
    starts_at: int
    ends_at: int
    active: bool


class FileUsage(BaseModel):
    file_id: str
    state: str
    bytes_stored: int
    byte_days: float
    bytes_served: int
    chunks_sold: int
    earned_msat: int


class UsageTotals(BaseModel):
    bytes_stored: int
    byte_days: float
    bytes_served: int
    chunks_sold: int
    earned_msat: int


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    account_id: str
    tenant: str
    used_bytes: int
    limit_bytes: int
    free_quota_bytes: int
    plans: list[ActivePlan]
    balance_msat: int
    totals: UsageTotals
    files: list[FileUsage] = Field(default_factory=list)


class Withdrawal(BaseModel):
    withdrawal_id: str
    state: Literal["pending", "succeeded", "failed"]
    amount_msat: int
    fee_reserve_msat: int
    fee_paid_msat: int | None
    failure: str | None
    payment_hash: str


class TenantReport(BaseModel):
    tenant: str
    accounts: list[Usage]
    fees_msat: int
    plans_msat: int
    signups_msat: int = Field(description="paid signups (the tenant's signup_price_msat)")
    credit_owed_msat: int = Field(
        default=0, description="prepaid credit sold and not spent yet (owed to its holders)"
    )
    ledger_sum_msat: int = Field(
        description="the sum of the tenant's balances (users, holds, its operator and"
        " outside-world accounts): 0 when its books stand on their own"
    )


class LedgerCheck(BaseModel):
    entries_sum_msat: int
    balances_sum_msat: int
    consistent: bool


class OperatorReport(BaseModel):
    tenants: list[TenantReport]
    ledger: LedgerCheck


class PreimagePending(BaseModel):
    state: str
    detail: str


class PreimageSettled(BaseModel):
    state: Literal["settled"]
    preimage: str = Field(pattern="^[0-9a-f]{64}$")


class VaultInfo(BaseModel):
    account_id: str
    counter: int
    keys: list[str]
    keep_versions: int
    trash_days: int | None = Field(description="days the trash keeps an entry; null: until emptied")


class VaultKey(BaseModel):
    name: str
    wrapped: dict[str, Any]


class VaultKeyStored(BaseModel):
    name: str


class VaultKeyDeleted(BaseModel):
    name: str
    deleted: bool


class VaultObject(BaseModel):
    id: str
    counter: int
    data: str | None = Field(description="base64url ciphertext; null when deleted")


class VaultLog(BaseModel):
    counter: int = Field(description="the change that last wrote the deletion log")
    data: str = Field(description="base64url ciphertext (docs/format.md §14.9)")


class VaultChanges(BaseModel):
    counter: int
    more: bool
    objects: list[VaultObject]
    log: VaultLog | None = Field(description="the deletion log, when written after `since`")


class VaultCounter(BaseModel):
    counter: int
