//! How long scans are kept: per class, 30 days for mail and 90 for packages by default.

use imbtrack_feed::MailClass;

pub use imbtrack_feed::time::DAY_MS;

/// Retention windows per class. Shorter windows are always allowed; longer ones than the
/// defaults only through [`RetentionPolicy::with_override`], since the data is personal and
/// the defaults are the published retention periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    mail_ms: i64,
    package_ms: i64,
}

/// A window longer than the default without the explicit override, or not positive.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class} retention of {days} days is not allowed: it must be positive and at most {max_days} days without an explicit override")]
pub struct RetentionError {
    /// `mail` or `package`.
    pub class: &'static str,
    /// The days asked for.
    pub days: f64,
    /// The default maximum.
    pub max_days: i64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            mail_ms: 30 * DAY_MS,
            package_ms: 90 * DAY_MS,
        }
    }
}

impl RetentionPolicy {
    /// Windows no longer than the defaults.
    pub fn new(mail_ms: i64, package_ms: i64) -> Result<RetentionPolicy, RetentionError> {
        let default = RetentionPolicy::default();
        for (class, window, max) in [
            ("mail", mail_ms, default.mail_ms),
            ("package", package_ms, default.package_ms),
        ] {
            if window <= 0 || window > max {
                return Err(RetentionError {
                    class,
                    days: window as f64 / DAY_MS as f64,
                    max_days: max / DAY_MS,
                });
            }
        }
        Ok(RetentionPolicy {
            mail_ms,
            package_ms,
        })
    }

    /// Any positive windows, longer than the defaults included: the caller has said so explicitly.
    pub fn with_override(mail_ms: i64, package_ms: i64) -> Result<RetentionPolicy, RetentionError> {
        for (class, window) in [("mail", mail_ms), ("package", package_ms)] {
            if window <= 0 {
                return Err(RetentionError {
                    class,
                    days: window as f64 / DAY_MS as f64,
                    max_days: 0,
                });
            }
        }
        Ok(RetentionPolicy {
            mail_ms,
            package_ms,
        })
    }

    /// The window of a class in milliseconds.
    pub fn window_ms(&self, class: MailClass) -> i64 {
        match class {
            MailClass::Mail => self.mail_ms,
            MailClass::Package => self.package_ms,
        }
    }

    /// Whether a scan at `time_ms` may still be served at `now_ms`: its age is at most the window.
    pub fn serves(&self, class: MailClass, time_ms: i64, now_ms: i64) -> bool {
        now_ms - time_ms <= self.window_ms(class)
    }

    /// Whether the bucket of `day` (days since the epoch) is wholly past the window at `now_ms`:
    /// its day ended at least one window ago, so no scan in it can be served.
    pub fn bucket_expired(&self, class: MailClass, day: i64, now_ms: i64) -> bool {
        now_ms - (day + 1) * DAY_MS >= self.window_ms(class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_edges() {
        let policy = RetentionPolicy::default();
        let now = 100 * DAY_MS;
        let window = policy.window_ms(MailClass::Mail);
        assert!(policy.serves(MailClass::Mail, now - window + 1000, now));
        assert!(!policy.serves(MailClass::Mail, now - window - 1000, now));
        assert!(policy.serves(MailClass::Package, now - window - 1000, now));
        // Day 69 ends at 70 days; 30 days later is day 100 exactly.
        assert!(policy.bucket_expired(MailClass::Mail, 69, now));
        assert!(!policy.bucket_expired(MailClass::Mail, 69, now - 1000));
        assert!(!policy.bucket_expired(MailClass::Package, 69, now));
    }

    #[test]
    fn longer_windows_need_the_override() {
        assert!(RetentionPolicy::new(10 * DAY_MS, 20 * DAY_MS).is_ok());
        let err = RetentionPolicy::new(31 * DAY_MS, 90 * DAY_MS).unwrap_err();
        assert_eq!(err.class, "mail");
        assert!(RetentionPolicy::new(30 * DAY_MS, 0).is_err());
        assert!(RetentionPolicy::with_override(365 * DAY_MS, 365 * DAY_MS).is_ok());
    }
}
