"""The pages' CSP logo origin and the request-body budget (pure parts of issue 9, item 10)."""

from __future__ import annotations

from gateway.config import Brand, TenantSettings
from gateway.http.bodies import BodyBudget
from gateway.http.handlers.pages import content_security_policy, logo_origin


def test_the_logo_origin_is_an_http_origin_or_nothing() -> None:
    assert logo_origin("https://cdn.acme.example:8443/brand/logo.svg") == (
        "https://cdn.acme.example:8443"
    )
    assert logo_origin("http://[2001:db8::1]/l.png") == "http://[2001:db8::1]"
    for refused in (
        None,
        "",
        "/static/logo.svg",  # relative: 'self' already covers it
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "https://user:pw@cdn.example/l.png",
        "https://cdn.example;script-src */l.png",
        "https://cdn.example:99999/l.png",
    ):
        assert logo_origin(refused) is None, refused


def test_the_csp_names_the_tenants_logo_origin_in_img_src_only() -> None:
    tenant = TenantSettings(brand=Brand(logo_url="https://cdn.acme.example/logo.svg"))
    directives = dict(d.strip().split(" ", 1) for d in content_security_policy(tenant).split(";"))
    assert "https://cdn.acme.example" in directives["img-src"].split()
    assert "cdn.acme.example" not in directives["script-src"]
    assert "cdn" not in content_security_policy(TenantSettings())


def test_the_body_budget_counts_bytes_and_frees_them() -> None:
    budget = BodyBudget(100)
    assert budget.reserve(60) and budget.reserve(40)
    assert not budget.reserve(1)
    budget.release(40)
    assert budget.reserve(30) and not budget.reserve(11)
    assert not BodyBudget(10).reserve(11)  # larger than the whole budget: never
