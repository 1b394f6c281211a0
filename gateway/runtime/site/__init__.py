"""The local site page (DESIGN.md section 11): a read-only web page served by the
daemon on its own loop, off by default, loopback by default.

    pages.py        what each page shows, as plain values (no web framework)
    charts.py       spectra, trends and the ISO zone bar as SVG drawn on the server
    feeds.py        live updates: one rate-bounded feed per watched page, shared by viewers
    live_values.py  the newest sample of every tag
    snapshots.py    the spectrum at the time a vibration finding opened a ticket (local only)
    server.py       routes, templates, static files, server-sent events, access control
                    (the only importer of aiohttp and jinja2)
    templates/, static/   package data, read with importlib.resources
"""
