//! The subset of GLib's key-file format that qemu-ga's two files use: the config file
//! (`[general]`, docs/protocol.md §3.2) and the persistent state (`[global]`,
//! `fd_counter`).
//!
//! Both files are shared with qemu-ga installations (a distribution's `/etc/qemu/qemu-ga.conf`,
//! a state directory that an upstream agent wrote), so a file upstream accepts must mean the
//! same here and a file upstream rejects must be rejected too: the rules below are GLib's
//! `GKeyFile` parser rules (leading blanks dropped, `#` comments, groups merged when repeated,
//! the last of a repeated key wins, `\s \n \t \r \\` escapes in strings, `true|false|1|0`
//! booleans), and the error texts are GLib's, with plain ASCII quotes.

use std::fmt::Write as _;

/// A parsed key file: groups in file order, each with its keys in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyFile {
    groups: Vec<(String, Vec<(String, String)>)>,
}

impl KeyFile {
    /// Parse `data`. Errors carry GLib's message.
    pub fn parse(data: &[u8]) -> Result<KeyFile, String> {
        let mut kf = KeyFile::default();
        let mut current: Option<usize> = None;
        for raw in data.split(|&b| b == b'\n') {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let start = raw
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(raw.len());
            let line = &raw[start..];
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let text = String::from_utf8_lossy(line);
            if is_group_line(line) {
                // The name ends at the last `]`.
                let end = line.iter().rposition(|&b| b == b']').unwrap_or(line.len());
                let name = String::from_utf8_lossy(&line[1..end]).into_owned();
                if name.is_empty() || name.chars().any(|c| c == '[' || c == ']' || c.is_control()) {
                    return Err(format!("Invalid group name: {name}"));
                }
                current = Some(match kf.groups.iter().position(|(g, _)| *g == name) {
                    Some(i) => i,
                    None => {
                        kf.groups.push((name, Vec::new()));
                        kf.groups.len() - 1
                    }
                });
                continue;
            }
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                return Err(format!(
                    "Key file contains line \"{text}\" which is not a key-value pair, group, or comment"
                ));
            };
            if eq == 0 {
                return Err(format!(
                    "Key file contains line \"{text}\" which is not a key-value pair, group, or comment"
                ));
            }
            let Some(gi) = current else {
                return Err("Key file does not start with a group".to_string());
            };
            let key_bytes = line[..eq].trim_ascii_end();
            let key = String::from_utf8_lossy(key_bytes).into_owned();
            if !is_key_name(&key) {
                return Err(format!("Invalid key name: {key}"));
            }
            let value_bytes = line[eq + 1..].trim_ascii_start();
            let value = match std::str::from_utf8(value_bytes) {
                Ok(v) => v.to_string(),
                Err(_) => {
                    return Err(format!(
                        "Key file contains key \"{key}\" with value \"{}\" which is not UTF-8",
                        String::from_utf8_lossy(value_bytes)
                    ));
                }
            };
            let keys = &mut kf.groups[gi].1;
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => keys.push((key, value)),
            }
        }
        Ok(kf)
    }

    /// The raw (still escaped) value of `key` in `group`.
    pub fn raw(&self, group: &str, key: &str) -> Option<&str> {
        let (_, keys) = self.groups.iter().find(|(g, _)| g == group)?;
        keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A string value with its escapes decoded (`g_key_file_get_string`); `Ok(None)` if absent.
    pub fn string(&self, group: &str, key: &str) -> Result<Option<String>, String> {
        let Some(raw) = self.raw(group, key) else {
            return Ok(None);
        };
        unescape(raw).map(Some).ok_or_else(|| uninterpretable(key))
    }

    /// A boolean value (`g_key_file_get_boolean`); `Ok(None)` if absent.
    pub fn boolean(&self, group: &str, key: &str) -> Result<Option<bool>, String> {
        let Some(raw) = self.raw(group, key) else {
            return Ok(None);
        };
        match raw.trim_end_matches(|c: char| c.is_ascii_whitespace()) {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(uninterpretable(key)),
        }
    }

    /// An integer value; `None` if absent or not an integer.
    pub fn integer(&self, group: &str, key: &str) -> Option<i64> {
        self.raw(group, key)?.trim().parse().ok()
    }
}

fn uninterpretable(key: &str) -> String {
    format!("Key file contains key \"{key}\" which has a value that cannot be interpreted.")
}

/// `[name]` optionally followed by blanks.
fn is_group_line(line: &[u8]) -> bool {
    if line.first() != Some(&b'[') {
        return false;
    }
    let Some(close) = line.iter().position(|&b| b == b']') else {
        return false;
    };
    line[close + 1..].iter().all(|&b| b == b' ' || b == b'\t')
}

/// GLib's key-name rule: non-empty, no `=`, `[` or `]` except one trailing `[locale]`, no
/// leading or trailing blank.
fn is_key_name(key: &str) -> bool {
    let base_end = key.find(['=', '[', ']']).unwrap_or(key.len());
    let (base, rest) = key.split_at(base_end);
    if base.is_empty() || base.starts_with(' ') || base.ends_with(' ') {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let Some(locale) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    locale
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Decode `\s \n \t \r \\`; any other escape or a trailing backslash is invalid.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            's' => ' ',
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '\\' => '\\',
            _ => return None,
        });
    }
    Some(out)
}

/// Encode a string value as `g_key_file_set_string` does: leading blanks as `\s`/`\t`,
/// newlines, carriage returns and backslashes always; everything else as is.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut leading = true;
    for c in value.chars() {
        match c {
            ' ' if leading => out.push_str("\\s"),
            '\t' if leading => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
        if c != ' ' && c != '\t' {
            leading = false;
        }
    }
    out
}

/// Writes a key file in GLib's layout: `[group]`, then `key=value` lines.
#[derive(Debug, Default)]
pub struct Writer {
    text: String,
}

impl Writer {
    /// Start a group.
    pub fn group(&mut self, name: &str) -> &mut Self {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        let _ = writeln!(self.text, "[{name}]");
        self
    }

    /// A string member (escaped).
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        let _ = writeln!(self.text, "{key}={}", escape(value));
        self
    }

    /// A boolean member.
    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        let _ = writeln!(self.text, "{key}={value}");
        self
    }

    /// An integer member.
    pub fn integer(&mut self, key: &str, value: i64) -> &mut Self {
        let _ = writeln!(self.text, "{key}={value}");
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glib_rules() {
        let kf = KeyFile::parse(
            b"# c\n\n[general]\n  verbose = true  \nmethod= unix-listen \npath=/a\\sb\\tc\r\n[other]\nx=1\n[general]\ndaemon=0\nx[de]=2\n",
        )
        .unwrap();
        assert_eq!(kf.boolean("general", "verbose"), Ok(Some(true)));
        assert_eq!(
            kf.string("general", "method"),
            Ok(Some("unix-listen ".into()))
        );
        assert_eq!(kf.string("general", "path"), Ok(Some("/a b\tc".into())));
        assert_eq!(kf.boolean("general", "daemon"), Ok(Some(false)));
        assert_eq!(kf.integer("other", "x"), Some(1));
        assert!(kf.raw("general", "x").is_none());
        assert_eq!(kf.string("general", "nothing"), Ok(None));
    }

    #[test]
    fn last_key_wins_and_groups_merge() {
        let kf = KeyFile::parse(b"[a]\nk=1\n[b]\n[a]\nk=2\n").unwrap();
        assert_eq!(kf.integer("a", "k"), Some(2));
    }

    #[test]
    fn errors_as_glib() {
        assert_eq!(
            KeyFile::parse(b"junk\n"),
            Err(
                "Key file contains line \"junk\" which is not a key-value pair, group, or comment"
                    .into()
            )
        );
        assert_eq!(
            KeyFile::parse(b"a=b\n"),
            Err("Key file does not start with a group".into())
        );
        assert_eq!(KeyFile::parse(b"[]\n"), Err("Invalid group name: ".into()));
        assert!(KeyFile::parse(b"[g]\n=x\n").is_err());
        assert!(KeyFile::parse(b"[g]\n[a=x\n").is_err());
        let kf = KeyFile::parse(b"[general]\ndaemon=yes\npath=a\\qb\nend=x\\\n").unwrap();
        let bad = "Key file contains key \"daemon\" which has a value that cannot be interpreted.";
        assert_eq!(kf.boolean("general", "daemon"), Err(bad.into()));
        assert!(kf.string("general", "path").is_err());
        assert!(kf.string("general", "end").is_err());
        assert!(KeyFile::parse(b"[g]\nk=\xff\n").is_err());
    }

    #[test]
    fn escape_round_trip() {
        for s in ["plain", " lead", "\tlead", "a b\tc", "x\\y", "l1\nl2\r", ""] {
            let text = format!("[g]\nk={}\n", escape(s));
            assert_eq!(
                KeyFile::parse(text.as_bytes()).unwrap().string("g", "k"),
                Ok(Some(s.into()))
            );
        }
        assert_eq!(escape("/a b\tc"), "/a b\tc");
        assert_eq!(escape("  x"), "\\s\\sx");
    }

    #[test]
    fn writer_layout() {
        let mut w = Writer::default();
        w.group("global").integer("fd_counter", 1002);
        assert_eq!(w.finish(), "[global]\nfd_counter=1002\n");
    }
}
