"""Drives a T4 (or etcd) through etcd3gw, OpenStack's etcd v3 client over the JSON gateway:
put/get/prefix/delete, a transaction, a lease with an attached key, a watch and a lock.
Usage: etcd3gw_check.py HOST PORT. Exits non-zero with the failed check on stderr."""

import sys
import threading

from etcd3gw.client import Etcd3Client


def main(host, port):
    client = Etcd3Client(host=host, port=int(port), timeout=10)
    assert client.api_path.endswith("/v3/"), client.api_path
    assert client.status()["header"]["revision"], "status"
    assert client.members(), "member list"

    assert client.put("gw/a", "1") and client.put("gw/b", "2")
    assert client.get("gw/a") == [b"1"], client.get("gw/a")
    prefix = sorted(value for value, _ in client.get_prefix("gw/"))
    assert prefix == [b"1", b"2"], prefix
    assert client.delete("gw/b") is True
    assert client.delete("gw/b") is False, "already deleted"

    # compare-and-swap through the raw transaction API (keys and values base64, as etcd3gw sends them)
    from etcd3gw.utils import _encode

    txn = {
        "compare": [{"key": _encode("gw/a"), "result": "EQUAL", "target": "VALUE", "value": _encode("1")}],
        "success": [{"request_put": {"key": _encode("gw/a"), "value": _encode("swapped")}}],
        "failure": [],
    }
    assert client.transaction(txn).get("succeeded") is True, "txn"
    assert client.get("gw/a") == [b"swapped"]

    lease = client.lease(ttl=30)
    assert client.put("gw/leased", "v", lease=lease)
    assert 0 < lease.ttl() <= 30, lease.ttl()
    assert lease.refresh() > 0, "keep-alive"
    assert [key for key in lease.keys()] == [b"gw/leased"], lease.keys()
    assert lease.revoke()
    assert client.get("gw/leased") == [], "the lease's key went with it"

    events, cancel = client.watch("gw/watched")
    seen = []
    reader = threading.Thread(target=lambda: seen.append(next(events)), daemon=True)
    reader.start()
    # the watch is created by the time a put lands only if we retry until it is seen
    for attempt in range(50):
        client.put("gw/watched", "v%d" % attempt)
        reader.join(timeout=0.2)
        if seen:
            break
    cancel()
    assert seen and seen[0]["kv"]["key"] == b"gw/watched", seen

    lock = client.lock(id="gw-lock", ttl=30)
    assert lock.acquire(), "lock acquired"
    assert lock.is_acquired()
    other = client.lock(id="gw-lock", ttl=30)
    assert lock.release(), "lock released"
    assert other.acquire(), "free again after release"
    other.release()
    print("etcd3gw: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
