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


class PreimageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    macaroon: str = Field(min_length=10, max_length=64 * 1024)


# The vault (docs/format.md §14): opaque objects of at most 1 MiB, in batches.
MAX_OBJECT_BYTES = 1 << 20
MAX_BATCH_OBJECTS = 2000
OBJECT_ID_PATTERN = r"[a-z2-7]{25}[aeimquy4]"  # canonical base32 of 16 bytes


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


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded"]
    gateway: ComponentHealth
    lnd: ComponentHealth
    kubo: ComponentHealth


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


class FileDeleted(BaseModel):
    file_id: str
    state: Literal["deleted"]
    freed_bytes: int
    chunks: int


class AccountCreated(BaseModel):
    account_id: str
    api_key: str
    tenant: str
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


class VaultChanges(BaseModel):
    counter: int
    more: bool
    objects: list[VaultObject]


class VaultCounter(BaseModel):
    counter: int
