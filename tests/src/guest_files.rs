//! Snapshots of the Linux guest's files, for the hostile-user checks: a root agent attacked by
//! an unprivileged user must change no file outside that user's home, and "no file" has to
//! mean every file, not a list of the ones an attack is expected to aim at. A snapshot is taken
//! in the guest with busybox's `find` and `stat` (through an agent the attack does not target)
//! and compared on the host.

use std::collections::BTreeMap;

/// Where the suite keeps its own scratch files in the guest (a pid, a flag, a socket, a log):
/// left out of the snapshots.
pub const SCRATCH: &str = "/run/hostile";

/// What the snapshots leave out: the kernel's trees, the hostile user's home (the user may
/// change anything there), the agents' own state directories, logs and pid files
/// (`/run/qga0`…`/run/qga3*`), the fsfreeze hook's log and flags (the test's fixture) and the
/// suite's scratch directory.
pub const SNAPSHOT_COMMAND: &str = "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /home/tester \
     -o -path '/run/qga[0-9]*' -o -path '/run/fsfreeze-hook.*' -o -path /run/hostile \\) -prune \
     -o -exec stat -c '%n|%F|%u|%g|%a|%i|%h|%s|%Y|%Z|%N' {} +";

/// Owner, mode, inode and (for regular files) links, size, mtime and ctime, or (for links) the
/// target, of every file in the guest outside what [`SNAPSHOT_COMMAND`] leaves out. The ctime catches
/// a change that was undone (a chown and a chown back, a write of the same bytes), which no
/// one but the kernel can set.
#[derive(PartialEq)]
pub struct Snapshot(BTreeMap<String, Vec<(&'static str, String)>>);

impl Snapshot {
    /// Reads the output of [`SNAPSHOT_COMMAND`]. Panics on output that is not a snapshot of
    /// this guest (a malformed line, or no `/etc/shadow`): a check on it would mean nothing.
    pub fn parse(text: &str) -> Snapshot {
        let mut files = BTreeMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(11, '|').collect();
            assert_eq!(f.len(), 11, "snapshot line `{line}`");
            let keep: &[usize] = match f[1] {
                "regular file" | "regular empty file" => &[1, 2, 3, 4, 5, 6, 7, 8, 9],
                "symbolic link" => &[1, 2, 3, 5, 10],
                // A directory's size and times change with its entries, which are listed.
                _ => &[1, 2, 3, 4, 5],
            };
            const NAMES: [&str; 11] = [
                "name", "type", "uid", "gid", "mode", "inode", "links", "size", "mtime", "ctime",
                "target",
            ];
            let fields = keep.iter().map(|&i| (NAMES[i], f[i].to_string())).collect();
            files.insert(f[0].to_string(), fields);
        }
        assert!(
            files.contains_key("/etc/shadow") && files.len() > 100,
            "the snapshot lists {} files",
            files.len()
        );
        Snapshot(files)
    }

    /// What differs from `before`: one entry per file, naming the fields that changed.
    pub fn changes_since(&self, before: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (name, was) in &before.0 {
            match self.0.get(name) {
                None => out.push(format!("{name} removed")),
                Some(now) if now != was => {
                    let fields: Vec<String> = was
                        .iter()
                        .zip(now)
                        .filter(|(a, b)| a != b)
                        .map(|((k, a), (_, b))| match *k {
                            "uid" | "gid" | "mode" | "type" => format!("{k} {a}→{b}"),
                            _ => k.to_string(),
                        })
                        .collect();
                    out.push(format!("{name} ({})", fields.join(", ")));
                }
                Some(_) => {}
            }
        }
        for name in self.0.keys().filter(|n| !before.0.contains_key(*n)) {
            out.push(format!("{name} created"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing of 101 files with `/etc/shadow` among them, and `extra` lines.
    fn listing(extra: &[&str]) -> String {
        let mut text: String = (0..100)
            .map(|i| {
                format!(
                    "/bin/a{i}|symbolic link|0|0|777|{i}|1|12|5|5|'/bin/a{i}' -> '/bin/busybox'\n"
                )
            })
            .collect();
        for l in extra {
            text.push_str(l);
            text.push('\n');
        }
        text
    }

    #[test]
    fn changes_name_the_file_and_the_fields() {
        let shadow = "/etc/shadow|regular file|0|0|640|7|1|60|100|100|/etc/shadow";
        let before = Snapshot::parse(&listing(&[
            shadow,
            "/run|directory|0|0|755|2|3|80|1|1|/run",
        ]));
        assert_eq!(before.changes_since(&before), Vec::<String>::new());
        // A directory's times and size are not compared; a file's ctime is.
        let after = Snapshot::parse(&listing(&[
            "/etc/shadow|regular file|1000|0|640|7|1|60|100|101|/etc/shadow",
            "/run|directory|0|0|755|2|4|120|9|9|/run",
            "/etc/qga.state|regular file|0|0|644|9|1|24|9|9|/etc/qga.state",
        ]));
        assert_eq!(
            after.changes_since(&before),
            ["/etc/shadow (uid 0→1000, ctime)", "/etc/qga.state created"]
        );
        assert_eq!(
            before.changes_since(&after),
            ["/etc/qga.state removed", "/etc/shadow (uid 1000→0, ctime)"]
        );
    }

    #[test]
    #[should_panic(expected = "the snapshot lists 100 files")]
    fn a_listing_without_the_guest_files_is_refused() {
        Snapshot::parse(&listing(&[]));
    }
}
