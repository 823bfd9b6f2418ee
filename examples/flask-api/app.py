"""The "legacy API": a small Flask + SQLite app of the kind cachalot is put in front of.

It is written the way such apps usually are: every view runs its SQL on every request and
the responses carry no cache headers at all (no Cache-Control, no ETag, no Last-Modified).
Deciding what may be cached, and for how long, is left to the proxy's policy file
(config/cachalot.toml), which is the whole point of the demo.

Two things are here only for the demo:
  * FLASK_API_DELAY_MS adds latency to every data query, standing in for the slow shared
    database of a real deployment, so that a cache hit is visibly faster than a miss;
  * GET /api/origin-stats counts the requests that actually reached this process, so you can
    see how many of the requests sent to the proxy were answered from Redis instead.

Environment: PORT (default 5000), FLASK_API_DB (SQLite file, default flask-api.sqlite3 next to
this file), FLASK_API_DELAY_MS (default 150). Run with `python app.py`.
"""

import json
import os
import secrets
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

from flask import Flask, g, jsonify, request
from werkzeug.security import check_password_hash, generate_password_hash

HERE = os.path.dirname(os.path.abspath(__file__))
DB_PATH = os.environ.get("FLASK_API_DB") or os.path.join(HERE, "flask-api.sqlite3")
DELAY_S = int(os.environ.get("FLASK_API_DELAY_MS", "150")) / 1000.0
PORT = int(os.environ.get("PORT", "5000"))

app = Flask(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS orgs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, plan TEXT NOT NULL,
    settings TEXT NOT NULL,                -- a JSON object, edited with PUT .../settings
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL, display_name TEXT NOT NULL,
    email TEXT NOT NULL, org_id TEXT NOT NULL REFERENCES orgs(id), password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    id TEXT PRIMARY KEY, holder_id INTEGER NOT NULL REFERENCES users(id),
    org_id TEXT NOT NULL REFERENCES orgs(id), title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
    issued_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), created_at TEXT NOT NULL);
"""

# The seed password of every demo user (see README.md); hashed before it is stored.
DEMO_PASSWORD = "correct-horse"


def now_iso(delta=timedelta()):
    return (datetime.now(timezone.utc) + delta).isoformat(timespec="milliseconds")


def init_db():
    """Create the schema and the demo rows. Existing rows are kept (INSERT OR IGNORE), so a
    credential revoked in an earlier run stays revoked; point FLASK_API_DB at a new file for a
    clean slate."""
    pw = generate_password_hash(DEMO_PASSWORD)
    orgs = [
        ("acme", "Acme University", "enterprise", {"theme": "blue", "verification_page": True}),
        ("globex", "Globex Training", "team", {"theme": "green", "verification_page": True}),
        ("initech", "Initech Academy", "free", {"theme": "grey", "verification_page": False}),
    ]
    users = [
        (1, "alice", "Alice Martin", "alice@acme.example", "acme"),
        (2, "bob", "Bob Chen", "bob@globex.example", "globex"),
        (3, "carol", "Carol Diaz", "carol@initech.example", "initech"),
    ]
    # Issue dates relative to the first start, so that /api/stats?period=day|week differ.
    creds = [
        ("abc123", 1, "acme", "Certified Data Steward", "valid", now_iso(-timedelta(hours=2))),
        ("def456", 2, "globex", "Cloud Operations Associate", "valid", now_iso(-timedelta(days=3))),
        ("ghi789", 3, "initech", "Security Fundamentals", "valid", now_iso(-timedelta(days=20))),
    ]
    with sqlite3.connect(DB_PATH) as conn:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT OR IGNORE INTO orgs VALUES (?, ?, ?, ?, ?)",
                         [(i, n, p, json.dumps(s), now_iso()) for i, n, p, s in orgs])
        conn.executemany("INSERT OR IGNORE INTO users VALUES (?, ?, ?, ?, ?, ?)",
                         [u + (pw,) for u in users])
        conn.executemany("INSERT OR IGNORE INTO credentials VALUES (?, ?, ?, ?, ?, ?, NULL)", creds)
    conn.close()


def db():
    """One connection per request (sqlite3 connections must stay on their thread)."""
    if "db" not in g:
        g.db = sqlite3.connect(DB_PATH, timeout=5)
        g.db.row_factory = sqlite3.Row
    return g.db


@app.teardown_appcontext
def close_db(_exc):
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def query(sql, params=(), write=False):
    """Run one statement and pay the legacy database's latency, as every view here does."""
    cur = db().execute(sql, params)
    rows = cur.fetchall()
    if write:
        db().commit()
    time.sleep(DELAY_S)
    return rows


def not_found(what, ident):
    return jsonify(error="not_found", detail=f"no {what} {ident!r}"), 404


# --- Request accounting: how many requests reached the origin (not counting this view) ---

_served = Counter()
_served_lock = threading.Lock()
_started_at = now_iso()


@app.before_request
def count_request():
    rule = request.url_rule.rule if request.url_rule else "<unmatched>"
    if rule != "/api/origin-stats":
        with _served_lock:
            _served[f"{request.method} {rule}"] += 1


@app.get("/api/origin-stats")
def origin_stats():
    """Requests this process has served, per endpoint, since it started."""
    with _served_lock:
        counts = dict(_served)
    return jsonify(total=sum(counts.values()), endpoints=counts, since=_started_at)


# --- The API ---

@app.get("/healthz")
def healthz():
    return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/api/credentials/<cred_id>")
def get_credential(cred_id):
    """Public verification endpoint: what a QR code on a certificate points at. The hottest
    route of the API, and the one whose staleness matters most (revocation)."""
    rows = query(
        "SELECT c.id, c.status, c.title, u.display_name AS holder, o.name AS org"
        " FROM credentials c JOIN users u ON u.id = c.holder_id JOIN orgs o ON o.id = c.org_id"
        " WHERE c.id = ?", (cred_id,))
    if not rows:
        return not_found("credential", cred_id)
    c = rows[0]
    return jsonify(id=c["id"], status=c["status"], holder=c["holder"], org=c["org"],
                   checked_at=now_iso())


@app.post("/api/credentials/<cred_id>/revoke")
def revoke_credential(cred_id):
    """Mark a credential revoked. Idempotent: revoking twice keeps the first revoked_at."""
    query("UPDATE credentials SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?)"
          " WHERE id = ?", (now_iso(), cred_id), write=True)
    rows = query("SELECT id, status, revoked_at FROM credentials WHERE id = ?", (cred_id,))
    if not rows:
        return not_found("credential", cred_id)
    return jsonify(dict(rows[0]))


@app.get("/api/users/<int:user_id>/profile")
def user_profile(user_id):
    rows = query(
        "SELECT u.id, u.username, u.display_name, u.email, o.name AS org,"
        " (SELECT COUNT(*) FROM credentials c WHERE c.holder_id = u.id) AS credentials"
        " FROM users u JOIN orgs o ON o.id = u.org_id WHERE u.id = ?", (user_id,))
    if not rows:
        return not_found("user", user_id)
    return jsonify(dict(rows[0], generated_at=now_iso()))


@app.get("/api/orgs/<org_id>/settings")
def get_org_settings(org_id):
    rows = query("SELECT id, name, plan, settings, updated_at FROM orgs WHERE id = ?", (org_id,))
    if not rows:
        return not_found("org", org_id)
    org = dict(rows[0])
    org["settings"] = json.loads(org["settings"])
    return jsonify(org)


@app.put("/api/orgs/<org_id>/settings")
def put_org_settings(org_id):
    """Merge the JSON object in the body into the org's settings (keys not sent are kept)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="bad_request", detail="body must be a JSON object"), 400
    rows = query("SELECT settings FROM orgs WHERE id = ?", (org_id,))
    if not rows:
        return not_found("org", org_id)
    settings = {**json.loads(rows[0]["settings"]), **body}
    query("UPDATE orgs SET settings = ?, updated_at = ? WHERE id = ?",
          (json.dumps(settings), now_iso(), org_id), write=True)
    return get_org_settings(org_id)


@app.get("/api/stats")
def stats():
    """Public dashboard counts. Every number is a real aggregate query, which is exactly
    why the legacy team wanted this route cached."""
    period = request.args.get("period", "day")
    if period not in ("day", "week"):
        return jsonify(error="bad_request", detail="period must be 'day' or 'week'"), 400
    since = now_iso(-timedelta(days=1 if period == "day" else 7))
    row = query(
        "SELECT (SELECT COUNT(*) FROM orgs) AS orgs, (SELECT COUNT(*) FROM users) AS users,"
        " (SELECT COUNT(*) FROM credentials) AS credentials,"
        " (SELECT COUNT(*) FROM credentials WHERE status = 'valid') AS valid,"
        " (SELECT COUNT(*) FROM credentials WHERE status = 'revoked') AS revoked,"
        " (SELECT COUNT(*) FROM credentials WHERE issued_at >= ?) AS issued_in_period,"
        " (SELECT COUNT(*) FROM credentials WHERE revoked_at >= ?) AS revoked_in_period",
        (since, since))[0]
    return jsonify(dict(row, period=period, generated_at=now_iso()))


@app.post("/api/auth/login")
def login():
    """Exchange a username and password for a session token. The response sets a cookie and
    carries a secret: it must never be stored by any cache."""
    body = request.get_json(silent=True) or {}
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return jsonify(error="bad_request", detail="JSON body needs username and password"), 400
    rows = query("SELECT id, password_hash FROM users WHERE username = ?", (username,))
    if not rows or not check_password_hash(rows[0]["password_hash"], password):
        return jsonify(error="unauthorized", detail="wrong username or password"), 401
    token = secrets.token_urlsafe(32)
    query("INSERT INTO sessions VALUES (?, ?, ?)", (token, rows[0]["id"], now_iso()), write=True)
    resp = jsonify(token=token, user_id=rows[0]["id"], expires_in=3600)
    resp.set_cookie("session", token, max_age=3600, httponly=True, samesite="Lax")
    return resp


@app.errorhandler(404)
def unknown_route(_e):
    return jsonify(error="not_found", detail=f"no route for {request.path}"), 404


@app.errorhandler(405)
def wrong_method(_e):
    return jsonify(error="method_not_allowed", detail=f"{request.method} {request.path}"), 405


if __name__ == "__main__":
    init_db()
    app.run(host="127.0.0.1", port=PORT, threaded=True)
