"""An HS256 token for the fuzzed server (user fuzz, tenant fuzz, the admin role the
examples' inspector asks for, one hour): `python3 mint_token.py SECRET`."""
import base64, hashlib, hmac, json, sys, time
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
secret = sys.argv[1].encode()
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = {"sub": "fuzz", "tenant": "fuzz", "roles": ["admin"], "exp": int(time.time()) + 3600}
body = b64(json.dumps(claims).encode())
sig = b64(hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest())
print(f"{header}.{body}.{sig}")
