"""The CIOC web app's URLs that mail and syncs link to, built from database values.

Base URLs come from the database with or without a scheme; every value put into a query
string is percent-encoded.
"""

MAX_TOKEN = 38  # a GUID with braces


def base(url):
    """A base URL with a scheme and no trailing slash ("" when there is none)."""
    url = (url or "").strip()
    if url and "://" not in url:
        url = "https://" + url
    return url.rstrip("/")


def record(base_url, num):
    """The page of a CIC record."""
    return f"{base(base_url)}/record/{num}"


def opportunity(base_url, vnum, view_type=None):
    """The page of a volunteer opportunity, through a view when one is given."""
    from urllib.parse import urlencode

    url = f"{base(base_url)}/volunteer/record/{vnum}"
    return url if view_type is None else f"{url}?{urlencode({'UseVOLVw': view_type})}"


def unsubscribe(base_url, email, token):
    """The volunteer profile unsubscribe page; raise ValueError for a token that is not one."""
    token = (token or "").strip()
    if not token or len(token) > MAX_TOKEN or any(c.isspace() for c in token):
        raise ValueError("not an unsubscribe token")
    from urllib.parse import urlencode

    query = urlencode({"email": email, "token": token})
    return f"{base(base_url)}/volunteer/profile/unsubscribe.asp?{query}"
