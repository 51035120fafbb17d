//! The one table of commands: upstream master's QAPI schema as Rust data.
//!
//! Everything that depends on the command set reads this table: name lookup, `guest-info`
//! (which lists commands in reverse schema order, as upstream's `QAPI_LIST_PREPEND` does), the
//! block and allow lists, and which backend family serves a command. Argument members are
//! declared next to each family's argument types in [`crate::commands`].

/// The backend family that serves a command. See [`crate::commands`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Answered by the engine itself: sync, sync-delimited, ping, info.
    Core,
    /// [`crate::commands::clock::Clock`]
    Clock,
    /// [`crate::commands::power::Power`]
    Power,
    /// [`crate::commands::files::Files`]
    Files,
    /// [`crate::commands::filesystems::Filesystems`]
    Filesystems,
    /// [`crate::commands::disks::Disks`]
    Disks,
    /// [`crate::commands::network::Network`]
    Network,
    /// [`crate::commands::cpus::Cpus`]
    Cpus,
    /// [`crate::commands::memory::Memory`]
    Memory,
    /// [`crate::commands::users::Users`]
    Users,
    /// [`crate::commands::ssh_keys::SshKeys`]
    SshKeys,
    /// [`crate::commands::exec::Exec`]
    Exec,
    /// [`crate::commands::system::System`]
    System,
}

macro_rules! commands {
    ($( $variant:ident = $name:literal, $family:ident, $success:literal; )*) => {
        /// A command of upstream master's schema, in schema order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Command {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Command {
            /// Every command, in schema (registration) order.
            pub const ALL: &'static [Command] = &[$(Command::$variant),*];

            /// The wire name, e.g. `guest-ping`.
            pub const fn name(self) -> &'static str {
                match self { $(Command::$variant => $name,)* }
            }

            /// The family of backend that serves it.
            pub const fn family(self) -> Family {
                match self { $(Command::$variant => Family::$family,)* }
            }

            /// `false` for the commands that send no response on success.
            pub const fn success_response(self) -> bool {
                match self { $(Command::$variant => $success,)* }
            }
        }
    };
}

commands! {
    GuestSyncDelimited = "guest-sync-delimited", Core, true;
    GuestSync = "guest-sync", Core, true;
    GuestPing = "guest-ping", Core, true;
    GuestGetTime = "guest-get-time", Clock, true;
    GuestSetTime = "guest-set-time", Clock, true;
    GuestInfo = "guest-info", Core, true;
    GuestShutdown = "guest-shutdown", Power, false;
    GuestFileOpen = "guest-file-open", Files, true;
    GuestFileClose = "guest-file-close", Files, true;
    GuestFileRead = "guest-file-read", Files, true;
    GuestFileWrite = "guest-file-write", Files, true;
    GuestFileSeek = "guest-file-seek", Files, true;
    GuestFileFlush = "guest-file-flush", Files, true;
    GuestFsfreezeStatus = "guest-fsfreeze-status", Filesystems, true;
    GuestFsfreezeFreeze = "guest-fsfreeze-freeze", Filesystems, true;
    GuestFsfreezeFreezeList = "guest-fsfreeze-freeze-list", Filesystems, true;
    GuestFsfreezeThaw = "guest-fsfreeze-thaw", Filesystems, true;
    GuestFstrim = "guest-fstrim", Filesystems, true;
    GuestSuspendDisk = "guest-suspend-disk", Power, false;
    GuestSuspendRam = "guest-suspend-ram", Power, false;
    GuestSuspendHybrid = "guest-suspend-hybrid", Power, false;
    GuestNetworkGetInterfaces = "guest-network-get-interfaces", Network, true;
    GuestGetVcpus = "guest-get-vcpus", Cpus, true;
    GuestSetVcpus = "guest-set-vcpus", Cpus, true;
    GuestGetDisks = "guest-get-disks", Disks, true;
    GuestGetFsinfo = "guest-get-fsinfo", Disks, true;
    GuestSetUserPassword = "guest-set-user-password", Users, true;
    GuestGetMemoryBlocks = "guest-get-memory-blocks", Memory, true;
    GuestSetMemoryBlocks = "guest-set-memory-blocks", Memory, true;
    GuestGetMemoryBlockInfo = "guest-get-memory-block-info", Memory, true;
    GuestExecStatus = "guest-exec-status", Exec, true;
    GuestExec = "guest-exec", Exec, true;
    GuestGetHostName = "guest-get-host-name", System, true;
    GuestGetUsers = "guest-get-users", Users, true;
    GuestGetTimezone = "guest-get-timezone", System, true;
    GuestGetOsinfo = "guest-get-osinfo", System, true;
    GuestGetDevices = "guest-get-devices", System, true;
    GuestSshGetAuthorizedKeys = "guest-ssh-get-authorized-keys", SshKeys, true;
    GuestSshAddAuthorizedKeys = "guest-ssh-add-authorized-keys", SshKeys, true;
    GuestSshRemoveAuthorizedKeys = "guest-ssh-remove-authorized-keys", SshKeys, true;
    GuestGetDiskstats = "guest-get-diskstats", Disks, true;
    GuestGetCpustats = "guest-get-cpustats", Cpus, true;
    GuestGetLoad = "guest-get-load", Cpus, true;
    GuestNetworkGetRoute = "guest-network-get-route", Network, true;
}

impl Command {
    /// Look a command up by its exact, case-sensitive wire name.
    pub fn from_name(name: &str) -> Option<Command> {
        Command::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Its position in [`Command::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The commands that stay allowed while filesystems are frozen (upstream's
    /// `ga_freeze_allowlist`).
    pub const fn allowed_while_frozen(self) -> bool {
        matches!(
            self,
            Command::GuestPing
                | Command::GuestInfo
                | Command::GuestSync
                | Command::GuestSyncDelimited
                | Command::GuestFsfreezeStatus
                | Command::GuestFsfreezeThaw
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_upstream_master() {
        assert_eq!(Command::ALL.len(), 44);
        for (i, c) in Command::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(Command::from_name(c.name()), Some(*c));
        }
        let silent: Vec<_> = Command::ALL
            .iter()
            .filter(|c| !c.success_response())
            .map(|c| c.name())
            .collect();
        assert_eq!(
            silent,
            [
                "guest-shutdown",
                "guest-suspend-disk",
                "guest-suspend-ram",
                "guest-suspend-hybrid"
            ]
        );
        assert_eq!(Command::from_name("Guest-ping"), None);
    }
}
