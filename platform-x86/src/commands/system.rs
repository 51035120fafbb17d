//! `guest-get-host-name`, `guest-get-timezone` and `guest-get-osinfo` from the configuration
//! ([`crate::config`]): build-time defaults, overridden on the kernel command line. The RTC
//! keeps UTC, so the time zone is UTC with offset 0.

use agent_core::Result;
use agent_core::commands::system::{GuestOsInfo, GuestTimezone, System};

use crate::config::Config;

/// Facts from the configuration.
pub struct ConfiguredSystem<'a> {
    config: Config<'a>,
}

impl<'a> ConfiguredSystem<'a> {
    /// From the effective configuration.
    pub fn new(config: Config<'a>) -> Self {
        ConfiguredSystem { config }
    }
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl System for ConfiguredSystem<'_> {
    fn host_name(&mut self) -> Result<&str> {
        Ok(self.config.hostname)
    }

    fn timezone(&mut self) -> Result<GuestTimezone<'_>> {
        Ok(GuestTimezone {
            zone: Some("UTC"),
            offset: 0,
        })
    }

    fn osinfo(&mut self) -> Result<GuestOsInfo<'_>> {
        let c = &self.config;
        Ok(GuestOsInfo {
            kernel_release: Some(env!("CARGO_PKG_VERSION")),
            kernel_version: Some("qga-x86 PVH image"),
            machine: Some("x86_64"),
            id: nonempty(c.os_id),
            name: nonempty(c.os_name),
            pretty_name: nonempty(c.os_pretty_name),
            version: nonempty(c.os_version),
            version_id: nonempty(c.os_version_id),
            variant: nonempty(c.os_variant),
            variant_id: nonempty(c.os_variant_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_command_line() {
        let c = Config::built_in().apply("qga.hostname=fw qga.os.name=Firmware qga.os.variant=lab");
        let mut s = ConfiguredSystem::new(c);
        assert_eq!(s.host_name(), Ok("fw"));
        let os = s.osinfo().expect("osinfo");
        assert_eq!(os.name, Some("Firmware"));
        assert_eq!(os.variant, Some("lab"));
        assert_eq!(os.machine, Some("x86_64"));
        assert_eq!(
            s.timezone().expect("tz"),
            GuestTimezone {
                zone: Some("UTC"),
                offset: 0
            }
        );
    }
}
