"""Prints, for each SQLAlchemy URL on standard input (one per line), the
TLS settings PyMySQL makes of it when SQLAlchemy hands it over, as zun-api
gets them: one JSON object per line."""
import json
import ssl
import sys

import pymysql
from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql
from sqlalchemy.engine import make_url

calls = {}


def record(name):
    orig = getattr(ssl.SSLContext, name)

    def recorded(self, *args, **kwargs):
        calls[name] = list(args) + [kwargs.get(k) for k in ("capath", "keyfile") if k in kwargs]
        return orig(self, *args, **kwargs)

    setattr(ssl.SSLContext, name, recorded)


for name in ("load_verify_locations", "load_default_certs", "load_cert_chain", "set_ciphers"):
    record(name)

dialect = MySQLDialect_pymysql(dbapi=pymysql)
for line in sys.stdin:
    calls.clear()
    try:
        url = make_url(line.strip())
        url = url.difference_update_query(["plugin"])  # as create_engine does
        args, kwargs = dialect.create_connect_args(url)
        conn = pymysql.connections.Connection(*args, defer_connect=True, **kwargs)
        out = {"tls": bool(conn.ssl)}
        if conn.ssl:
            cafile = capath = None
            if "load_verify_locations" in calls:
                cafile, capath = (calls["load_verify_locations"] + [None, None])[:2]
            cert = calls.get("load_cert_chain", [None, None])
            out.update(
                verify=conn.ctx.verify_mode != ssl.CERT_NONE,
                check_hostname=conn.ctx.check_hostname,
                cafile=cafile or "",
                capath=capath or "",
                cert=cert[0] or "",
                key=(cert + [None])[1] or "",
                ciphers="set_ciphers" in calls,
            )
    except Exception as e:  # noqa: BLE001 - every failure is an answer
        out = {"error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))
