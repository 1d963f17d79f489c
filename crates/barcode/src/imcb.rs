//! Intelligent Mail container barcodes (IMcb): `99M` + Mailer ID + mailer-assigned serial.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Application identifier and type indicator that open every container barcode.
const PREFIX: &str = "99M";
/// Mailer ID and serial together.
const BODY_LEN: usize = 18;

/// A container barcode: a 6- or 9-digit Mailer ID (9 digits when it starts with 9) and a 12- or
/// 9-character serial of digits and capital letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Imcb {
    body: [u8; BODY_LEN],
}

impl Imcb {
    /// Parses `99M…`, optionally written `(99)M…`; whitespace and FNC1 are ignored.
    pub fn parse(input: &str) -> Result<Imcb, Error> {
        let mut chars = input
            .chars()
            .filter(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | '\u{1d}'))
            .enumerate();
        for expected in PREFIX.chars() {
            match chars.next() {
                Some((_, c)) if c == expected => {}
                Some((position, found)) => {
                    return Err(Error::new(ErrorKind::ContainerCharacter {
                        position: position + 1,
                        found,
                    }))
                }
                None => return Err(Error::new(ErrorKind::ContainerLength { len: 0 })),
            }
        }
        let mut body = [0u8; BODY_LEN];
        let mut len = 0;
        for (position, c) in chars {
            let mailer_id_len = if body[0] == b'9' { 9 } else { 6 };
            let allowed = if len < mailer_id_len {
                c.is_ascii_digit()
            } else {
                c.is_ascii_digit() || c.is_ascii_uppercase()
            };
            if !allowed {
                return Err(Error::new(ErrorKind::ContainerCharacter {
                    position: position + 1,
                    found: c,
                }));
            }
            if len < BODY_LEN {
                body[len] = c as u8;
            }
            len += 1;
        }
        if len != BODY_LEN {
            return Err(Error::new(ErrorKind::ContainerLength { len }));
        }
        Ok(Imcb { body })
    }

    pub(crate) fn from_body(body: [u8; BODY_LEN]) -> Imcb {
        Imcb { body }
    }

    /// The Mailer ID.
    pub fn mailer_id(&self) -> &str {
        &self.as_str()[..self.mailer_id_len()]
    }

    /// The mailer-assigned serial.
    pub fn serial(&self) -> &str {
        &self.as_str()[self.mailer_id_len()..]
    }

    fn mailer_id_len(&self) -> usize {
        if self.body[0] == b'9' {
            9
        } else {
            6
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("container barcode characters are ASCII")
    }
}

impl fmt::Display for Imcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.as_str())
    }
}

impl fmt::Debug for Imcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Imcb({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mailer_id_lengths() {
        let six = Imcb::parse("(99)M 123456 ABC123456789").unwrap();
        assert_eq!((six.mailer_id(), six.serial()), ("123456", "ABC123456789"));
        assert_eq!(six.to_string(), "99M123456ABC123456789");
        let nine = Imcb::parse("99M901234567XYZ000001").unwrap();
        assert_eq!(
            (nine.mailer_id(), nine.serial()),
            ("901234567", "XYZ000001")
        );
    }

    #[test]
    fn faults_are_named() {
        assert_eq!(
            Imcb::parse("99M12345").unwrap_err().kind(),
            &ErrorKind::ContainerLength { len: 5 }
        );
        assert_eq!(
            Imcb::parse("99M12A456ABC123456789").unwrap_err().kind(),
            &ErrorKind::ContainerCharacter {
                position: 6,
                found: 'A'
            }
        );
        assert_eq!(
            Imcb::parse("99M123456abc123456789").unwrap_err().kind(),
            &ErrorKind::ContainerCharacter {
                position: 10,
                found: 'a'
            }
        );
        assert_eq!(
            Imcb::parse("98M123456ABC123456789").unwrap_err().kind(),
            &ErrorKind::ContainerCharacter {
                position: 2,
                found: '8'
            }
        );
    }
}
