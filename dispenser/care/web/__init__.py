"""The care service's web view: a small server-rendered Starlette app (Jinja2 templates, SVG
charts drawn on the server, no JavaScript, no CDN), served by uvicorn beside the ingest
workers. Part of the `care` extra; nothing the daemon imports imports it (docs/CARE.md)."""
