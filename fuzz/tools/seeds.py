#!/usr/bin/env python3
"""Writes the seed corpora and dictionaries of the args_<family> fuzz targets.

Seeds come from the protocol notes (docs/protocol.md, whose section numbers these are): the
argument examples of §1 and §2.7 and the argument error cases of §1.1 and §2.6 (missing, wrong type,
uint64 range, bad enum value, unexpected member, nested path, alternates), plus the
command-level argument errors of §2.6 (bad mode, count limits, base64, whence codes, keys).
A seed is one byte choosing the command within the family (its index in schema order) followed
by the `arguments` value. Run from fuzz/: python3 tools/seeds.py
"""
import os

# Commands of each family, in schema order (agent-core/src/schema.rs): the first input byte
# picks one modulo the count. The disk, network and system families have no command with
# arguments, so they have no target (the empty member table is fuzzed through core's
# guest-ping and guest-info and the other families' argument-less commands).
FAMILIES = {
    "core": ["guest-sync-delimited", "guest-sync", "guest-ping", "guest-info"],
    "time": ["guest-get-time", "guest-set-time"],
    "power": ["guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"],
    "file": ["guest-file-open", "guest-file-close", "guest-file-read", "guest-file-write",
             "guest-file-seek", "guest-file-flush"],
    "fs": ["guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list",
           "guest-fsfreeze-thaw", "guest-fstrim"],
    "cpu": ["guest-get-vcpus", "guest-set-vcpus", "guest-get-cpustats", "guest-get-load"],
    "user": ["guest-set-user-password", "guest-get-users"],
    "memory": ["guest-get-memory-blocks", "guest-set-memory-blocks", "guest-get-memory-block-info"],
    "exec": ["guest-exec-status", "guest-exec"],
    "ssh": ["guest-ssh-get-authorized-keys", "guest-ssh-add-authorized-keys",
            "guest-ssh-remove-authorized-keys"],
}

# Generic argument errors (§1.1, §2.6) applied to every command: no arguments, an unknown
# member, a non-object, an empty object.
COMMON = ['{}', '{"foo":1}', '{"foo":1,"bar":2}', '[]', '1', '"x"', 'null', '{"exec-oob":true}']

SEEDS = {
    "guest-sync": ['{"id":42}', '{"id":1.5}', '{"id":18446744073709551615}', '{"id":"1"}',
                   '{"id":-9223372036854775808}', '{"id":42,"foo":1}', '{"id":1e3}'],
    "guest-sync-delimited": ['{"id":42}', '{"id":true}', '{"id":9223372036854775807}'],
    "guest-set-time": ['{"time":1795438762351795000}', '{"time":0}', '{"time":-1}', '{"time":1.5}',
                       '{"time":null}', '{"time":"now"}', '{"time":4102444800000000000}'],
    "guest-shutdown": ['{"mode":"halt"}', '{"mode":"powerdown"}', '{"mode":"reboot"}',
                       '{"mode":"off"}', '{"mode":1}', '{"mode":"halt","delay":1}'],
    "guest-file-open": ['{"path":"/tmp/x","mode":"w+"}', '{"path":"/etc/hostname"}',
                        '{"path":"/tmp/x","mode":"rw"}', '{"path":""}', '{"mode":"r"}',
                        '{"path":1}', '{"path":"/tmp/\\u00e9","mode":"a+b"}'],
    "guest-file-close": ['{"handle":1000}', '{"handle":1001}', '{"handle":"1000"}',
                         '{"handle":-1}'],
    "guest-file-flush": ['{"handle":1000}', '{"handle":1000.0}'],
    "guest-file-read": ['{"handle":1000,"count":5}', '{"handle":1000}',
                        '{"handle":1000,"count":50331649}', '{"handle":1000,"count":50331648}',
                        '{"handle":1000,"count":-1}', '{"handle":1000,"count":0}',
                        '{"count":5}', '{"handle":1000,"count":"5"}'],
    "guest-file-write": ['{"handle":1000,"buf-b64":"SGVsbG8="}',
                         '{"handle":1000,"buf-b64":"SGVsbG8=","count":4}',
                         '{"handle":1000,"buf-b64":"SGVsbG8=","count":6}',
                         '{"handle":1000,"buf-b64":"SGV sbG8="}',
                         '{"handle":1000,"buf-b64":"SGVs\\nbG8="}',
                         '{"handle":1000,"buf-b64":"=AB="}',
                         '{"handle":1000,"buf-b64":""}',
                         '{"handle":1000,"buf-b64":"' + 'QUJD' * 80 + '"}',
                         '{"handle":1000}', '{"handle":1000,"buf-b64":1}'],
    "guest-file-seek": ['{"handle":1000,"offset":0,"whence":"set"}',
                        '{"handle":1000,"offset":2,"whence":"cur"}',
                        '{"handle":1000,"offset":0,"whence":"end"}',
                        '{"handle":1000,"offset":0,"whence":0}',
                        '{"handle":1000,"offset":0,"whence":7}',
                        '{"handle":1000,"offset":0,"whence":"middle"}',
                        '{"handle":1000,"offset":0,"whence":1.5}',
                        '{"handle":1000,"offset":0,"whence":true}',
                        '{"handle":1000,"offset":0}', '{"handle":1000,"whence":"set"}'],
    "guest-fsfreeze-freeze-list": ['{"mountpoints":["/","/boot"]}', '{"mountpoints":[]}',
                                   '{"mountpoints":["/",1]}', '{"mountpoints":"/"}'],
    "guest-fstrim": ['{"minimum":0}', '{"minimum":4096}', '{"minimum":-1}', '{"minimum":"1"}'],
    "guest-set-vcpus": ['{"vcpus":[{"logical-id":0,"online":true}]}',
                        '{"vcpus":[{"logical-id":1,"online":false,"can-offline":true}]}',
                        '{"vcpus":[{"logical-id":0}]}', '{"vcpus":[{"online":true}]}',
                        '{"vcpus":[]}', '{"vcpus":[1]}', '{"vcpus":{}}',
                        '{"vcpus":[{"logical-id":0,"online":true,"foo":1}]}',
                        '{"vcpus":[{"logical-id":0,"online":true},{"logical-id":1,"online":"yes"}]}'],
    "guest-set-memory-blocks": ['{"mem-blks":[{"phys-index":0,"online":true}]}',
                                '{"mem-blks":[{"phys-index":18446744073709551615,"online":false,"can-offline":false}]}',
                                '{"mem-blks":[{"phys-index":-1,"online":true}]}',
                                '{"mem-blks":[{"phys-index":1.5,"online":true}]}',
                                '{"mem-blks":[{"phys-index":18446744073709551616,"online":true}]}',
                                '{"mem-blks":[{"online":true}]}', '{"mem-blks":[]}',
                                '{"mem-blks":[{"phys-index":0,"online":true,"x":0}]}'],
    "guest-set-user-password": ['{"username":"root","password":"c2VjcmV0","crypted":false}',
                                '{"username":"root","password":"JDYkc2FsdCRoYXNo","crypted":true}',
                                '{"username":"a:b","password":"eA==","crypted":false}',
                                '{"username":"root","password":"YQpi","crypted":false}',
                                '{"username":"root","password":"!!","crypted":false}',
                                '{"username":"root","password":"eA=="}',
                                '{"username":"root","password":"eA==","crypted":"no"}'],
    "guest-exec-status": ['{"pid":4401}', '{"pid":-1}', '{"pid":"4401"}'],
    "guest-exec": ['{"path":"echo","arg":["-n","\\" test_str \\""],"capture-output":true}',
                   '{"path":"/bin/invalid-cmd42"}',
                   '{"path":"cat","input-data":"aGVsbG8=","capture-output":"merged"}',
                   '{"path":"env","env":["A=1","B=2"],"capture-output":"stdout"}',
                   '{"path":"true","capture-output":"separated"}',
                   '{"path":"true","capture-output":"all"}',
                   '{"path":"true","capture-output":1}',
                   '{"path":"cat","input-data":"a b"}',
                   '{"path":"true","arg":[1]}', '{"arg":["x"]}'],
    "guest-ssh-get-authorized-keys": ['{"username":"root"}', '{"username":"no-such-user-qga"}',
                                      '{"username":[]}'],
    "guest-ssh-add-authorized-keys": ['{"username":"root","keys":["ssh-ed25519 AAAAC3Nz test"],"reset":true}',
                                      '{"username":"root","keys":["ssh-rsa AAAAB3 a","#comment"]}',
                                      '{"username":"root","keys":[""]}',
                                      '{"username":"root","keys":["a\\nb"]}',
                                      '{"username":"root","keys":[1]}',
                                      '{"username":"root","keys":[],"reset":"yes"}',
                                      '{"username":"root"}'],
    "guest-ssh-remove-authorized-keys": ['{"username":"root","keys":["ssh-ed25519 AAAAC3Nz test"]}',
                                         '{"username":"root","keys":"k"}',
                                         '{"username":"root","keys":[],"reset":true}'],
}

MEMBERS = ["id", "time", "mode", "path", "handle", "count", "buf-b64", "offset", "whence",
           "mountpoints", "minimum", "vcpus", "logical-id", "online", "can-offline", "mem-blks",
           "phys-index", "username", "password", "crypted", "pid", "arg", "env", "input-data",
           "capture-output", "keys", "reset"]
VALUES = ["set", "cur", "end", "none", "stdout", "stderr", "separated", "merged", "halt",
          "powerdown", "reboot", "r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b", "w+",
          "wb+", "w+b", "a+", "ab+", "a+b"]
TOKENS = ["true", "false", "null", "{}", "[]", "[{", "}]", ":", ",", "\\\"", "\\u0000",
          "9223372036854775807", "-9223372036854775808", "18446744073709551615",
          "18446744073709551616", "50331648", "50331649", "1e308", "-0", "0.5", "1000", "=="]


def dict_escape(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def main():
    for fam, cmds in FAMILIES.items():
        d = os.path.join("corpus", "args_" + fam)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            if f.startswith("seed-"):
                os.remove(os.path.join(d, f))
        n = 0
        for i, cmd in enumerate(cmds):
            for args in SEEDS.get(cmd, []) + COMMON:
                with open(os.path.join(d, "seed-%03d" % n), "wb") as f:
                    f.write(bytes([i]) + args.encode())
                n += 1
        with open("args_%s.dict" % fam, "w") as f:
            f.write("# Members, enum values and tokens of the %s family's arguments "
                    "(written by tools/seeds.py).\n" % fam)
            for m in MEMBERS:
                f.write('"\\"%s\\""\n' % dict_escape(m))
            for v in VALUES:
                f.write('"\\"%s\\""\n' % dict_escape(v))
            for t in TOKENS:
                f.write('"%s"\n' % dict_escape(t))


if __name__ == "__main__":
    main()
