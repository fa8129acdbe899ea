//! Element types and how each one is split into byte planes.

use std::fmt;

/// The element type of a tensor, as named by safetensors.
///
/// The discriminant is the code stored in the container (FORMAT.md, "Dtype codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    Bool = 1,
    U8 = 2,
    I8 = 3,
    F8E5M2 = 4,
    F8E4M3 = 5,
    I16 = 6,
    U16 = 7,
    F16 = 8,
    BF16 = 9,
    I32 = 10,
    U32 = 11,
    F32 = 12,
    F64 = 13,
    I64 = 14,
    U64 = 15,
}

/// How the bytes of one element are rearranged before they are split into planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Plane `i` holds byte `width - 1 - i` of each little-endian element:
    /// the most significant byte comes first.
    Bytes,
    /// The element is rotated left by one bit first, so the sign bit moves to
    /// the least significant position and the exponent fills the top byte
    /// (BF16: all 8 exponent bits; F16: 5 exponent bits + 3 mantissa bits;
    /// F32: all 8; F64: 8 of 11). Then as `Bytes`.
    RotateSign,
}

impl Dtype {
    pub const ALL: [Dtype; 15] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8E5M2,
        Dtype::F8E4M3,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::I64,
        Dtype::U64,
    ];

    /// Size of one element in bytes, which is also the number of byte planes.
    pub fn width(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E5M2 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }

    pub fn grouping(self) -> Grouping {
        match self {
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 => Grouping::RotateSign,
            _ => Grouping::Bytes,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The name safetensors uses (`"BF16"`, `"F8_E4M3"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Parses a safetensors dtype name, case-insensitively; `F8E4M3` and
    /// `F8_E4M3` are both accepted.
    pub fn from_name(name: &str) -> Option<Dtype> {
        let norm: String = name
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_ascii_uppercase();
        Dtype::ALL
            .into_iter()
            .find(|d| d.name().replace('_', "") == norm)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_code(d.code()), Some(d));
            assert_eq!(Dtype::from_name(d.name()), Some(d));
            assert_eq!(Dtype::from_name(&d.name().to_lowercase()), Some(d));
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_code(16), None);
        assert_eq!(Dtype::from_name("F8E4M3"), Some(Dtype::F8E4M3));
        assert_eq!(Dtype::from_name("complex64"), None);
    }
}
