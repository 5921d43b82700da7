"""Security headers every page answers with: a strict Content-Security-Policy (no inline script,
no CDN), who may frame it (TOLLGATE_FRAME_ANCESTORS), no caching, no referrer."""

from __future__ import annotations

from tollgate.config import Settings


def frame_ancestors(settings: Settings) -> str:
    """Return the CSP frame-ancestors sources ('none' unless the operator allows an app)."""
    return " ".join(settings.frame_ancestors.split()) or "'none'"


def framing_allowed(settings: Settings) -> bool:
    return frame_ancestors(settings) != "'none'"


def content_security_policy(settings: Settings) -> str:
    """Return the pages' CSP: scripts and styles from this server only; images may also come
    from the brand's logo host (any https origin, as the operator names it)."""
    # No form-action: Chrome applies it to the redirect a form's answer makes, and the page's
    # buttons redirect to Stripe's hosted Checkout and Portal.
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: https:",
            "font-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "object-src 'none'",
            f"frame-ancestors {frame_ancestors(settings)}",
        ]
    )


def page_headers(settings: Settings) -> dict[str, str]:
    """Return the headers of every HTML page."""
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        # Never tell another site which page linked to it (same-origin keeps the Origin header
        # on the pages' own form posts, which the CSRF check compares).
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if not framing_allowed(settings):
        headers["X-Frame-Options"] = "DENY"  # for browsers that predate frame-ancestors
    return headers
