"""The admin listener's small pages (the index, signing in, an act's outcome): plain HTML, every value escaped."""

from __future__ import annotations

from html import escape

HEAD = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><style>'
        'body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1f2328}}'
        'input,button{{font:inherit;padding:.3rem .5rem}} .muted{{color:#59636e}}</style></head><body>')


def index_page(endpoints: dict[str, str]) -> str:
    items = "".join(f'<li>{_link(path, not what.startswith("POST"))} {escape(what)}</li>'
                    for path, what in endpoints.items())
    return HEAD.format(title="strangler admin") + f"<h1>strangler admin</h1><ul>{items}</ul></body></html>"


def signin_page(target: str, note: str = "") -> str:
    return HEAD.format(title="Sign in") + (
        "<h1>Sign in to the review console</h1>"
        + (f'<p class="muted" role="status">{escape(note)}</p>' if note else "")
        + '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{escape(target)}">'
        '<label>admin token <input type="password" name="token" required autocomplete="current-password"></label> '
        '<button type="submit">sign in</button></form></body></html>')


def message_page(text: str, back: str) -> str:
    return HEAD.format(title="strangler admin") + (
        f'<p role="alert">{escape(text)}</p><p><a href="{escape(back)}">Back to the console</a></p></body></html>')


def _link(path: str, followed: bool) -> str:
    """A link for what a browser can open; a POST-only path is named, not linked (a GET would be a 405)."""
    code = f"<code>{escape(path)}</code>"
    return f'<a href="{escape(path)}">{code}</a>' if followed else code
