"""Runs the maintenance calls of python-etcd3 (the etcd v3 client most Python programs use) against
one endpoint and prints, for each, one JSON line {"call": ..., "ok": true|false, "detail": ...}.
A call "passes" when it returns what the etcd v3 API promises (checked here), not merely when it
does not raise. Usage: maintenance_calls.py HOST PORT SCRATCH_DIR."""

import json
import os
import sys

import etcd3


def main(host, port, scratch):
    client = etcd3.client(host=host, port=int(port), timeout=30)
    checks = []

    def check(name, call):
        try:
            detail = call()
            checks.append({"call": name, "ok": True, "detail": detail})
        except Exception as e:  # a failed call is a result here, not a crash
            checks.append({"call": name, "ok": False, "detail": f"{type(e).__name__}: {e}"})

    for i in range(20):
        client.put(f"maint/{i}", f"value-{i}")

    def status():
        s = client.status()
        assert s.db_size > 0 and s.raft_index > 0 and s.leader is not None, vars(s)
        return s.version

    def hash_():
        h = client.hash()
        assert isinstance(h, int)
        return "an integer"

    def revision():
        return client.get_response("maint/0").header.revision

    def compact():
        client.compact(revision() - 5)
        return "compacted"

    def compact_physical():
        client.compact(revision() - 2, physical=True)
        return "compacted"

    def defragment():
        client.defragment()
        return "defragmented"

    def snapshot():
        path = os.path.join(scratch, "python-etcd3.snapshot")
        with open(path, "wb") as out:
            client.snapshot(out)
        size = os.path.getsize(path)
        # etcd's convention: the content is a multiple of 512 bytes, then its SHA-256.
        assert size > 32 and size % 512 == 32, size
        return "512-byte pages and a SHA-256"

    def alarms():
        assert client.list_alarms() == [] or list(client.list_alarms()) == []
        created = client.create_alarm()
        assert [a.alarm_type for a in created] == [1], created  # NOSPACE
        assert [a.alarm_type for a in client.list_alarms()] == [1]
        client.disarm_alarm()
        assert list(client.list_alarms()) == []
        return "created, listed, disarmed"

    def members():
        members = list(client.members)
        assert len(members) == 1 and members[0].client_urls, members
        return "one member"

    def lock():
        with client.lock("maint-lock", ttl=10) as held:
            assert held.is_acquired()
        return "acquired and released"

    def lease():
        lease = client.lease(30)
        client.put("maint/leased", "x", lease=lease)
        assert lease.remaining_ttl > 0 and b"maint/leased" in lease.keys
        lease.refresh()
        lease.revoke()
        assert client.get("maint/leased")[0] is None
        return "granted, refreshed, revoked"

    for name, call in [
        ("status", status),
        ("hash", hash_),
        ("compact", compact),
        ("compact physical", compact_physical),
        ("defragment", defragment),
        ("snapshot", snapshot),
        ("alarms", alarms),
        ("members", members),
        ("lock", lock),
        ("lease", lease),
    ]:
        check(name, call)
    for line in checks:
        print(json.dumps(line))


if __name__ == "__main__":
    main(*sys.argv[1:])
