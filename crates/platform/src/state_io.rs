//! The state's encoding streamed through a buffer of its own, a chunk at a
//! time. postcard's `std::io` flavors call the writer (or reader) once per
//! byte or number, through `dyn`: a snapshot's body went out at a fraction
//! of the speed of the same bytes encoded into memory, on the writer's
//! thread while every command waited. The bytes are postcard's, the same
//! either way: only how they reach the file changed. Records and commands
//! are encoded into a `Vec` the same way ([`encode_into`]).

use std::io::{Read, Write};

use postcard::de_flavors::Flavor as DecodeFlavor;
use postcard::ser_flavors::Flavor as EncodeFlavor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes handed to the writer at once, and read from the reader at once.
const CHUNK_BYTES: usize = 64 << 10;

/// Encodes `value` at the end of `out`, as `postcard::to_extend` does, with
/// fewer calls to `memmove` (see [`extend`]).
pub(crate) fn encode_into(value: &impl Serialize, out: Vec<u8>) -> postcard::Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, Appending(out))
}

struct Appending(Vec<u8>);

impl EncodeFlavor for Appending {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        extend(&mut self.0, bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// The longest slice copied a byte at a time: a varint's (u64's ten bytes).
const SHORT_COPY_BYTES: usize = 10;

/// Appends `bytes` to `buffer`. postcard hands every number over as a slice
/// of a few bytes, and `extend_from_slice` copies any slice with a call to
/// `memmove`: such calls were 3% of the writer's time, encoding records.
#[inline(always)]
fn extend(buffer: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() <= SHORT_COPY_BYTES {
        buffer.reserve(bytes.len());
        for &byte in bytes {
            buffer.push(byte);
        }
    } else {
        buffer.extend_from_slice(bytes);
    }
}

/// Encodes `value` as `postcard::to_io` does, handing `out` a chunk at a time.
pub(crate) fn encode_to(value: &impl Serialize, out: &mut dyn Write) -> std::io::Result<()> {
    let mut failed = None;
    let chunks = Chunks { out, buffer: Vec::with_capacity(CHUNK_BYTES), failed: &mut failed };
    match postcard::serialize_with_flavor(value, chunks) {
        Ok(()) => Ok(()),
        // The writer's own error, when it was the writer that failed.
        Err(error) => Err(failed.unwrap_or_else(|| std::io::Error::other(error))),
    }
}

struct Chunks<'a> {
    out: &'a mut dyn Write,
    buffer: Vec<u8>,
    failed: &'a mut Option<std::io::Error>,
}

impl Chunks<'_> {
    #[inline]
    fn hand_over_if_full(&mut self) -> postcard::Result<()> {
        if self.buffer.len() >= CHUNK_BYTES { self.hand_over() } else { Ok(()) }
    }

    #[cold]
    fn hand_over(&mut self) -> postcard::Result<()> {
        match self.out.write_all(&self.buffer) {
            Ok(()) => {
                self.buffer.clear();
                Ok(())
            }
            Err(error) => {
                *self.failed = Some(error);
                Err(postcard::Error::SerializeBufferFull)
            }
        }
    }
}

impl EncodeFlavor for Chunks<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buffer.push(byte);
        self.hand_over_if_full()
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        extend(&mut self.buffer, bytes);
        self.hand_over_if_full()
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.hand_over()
    }
}

/// Decodes values one after another from a reader, as `postcard::from_io`
/// does, reading it a chunk at a time. Reads past the last value's end (up
/// to a chunk): what it decodes must be the last thing the reader holds.
pub(crate) struct Decoder<'a> {
    reading: Reading<'a>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(source: &'a mut dyn Read) -> Decoder<'a> {
        Decoder { reading: Reading { source, buffer: vec![0; CHUNK_BYTES].into_boxed_slice(), at: 0, end: 0 } }
    }

    pub(crate) fn decode<T: DeserializeOwned>(&mut self) -> postcard::Result<T> {
        T::deserialize(&mut postcard::Deserializer::from_flavor(&mut self.reading))
    }
}

struct Reading<'a> {
    source: &'a mut dyn Read,
    buffer: Box<[u8]>,
    /// The buffer's bytes from `at` to `end` are not taken yet.
    at: usize,
    end: usize,
}

impl Reading<'_> {
    /// Makes at least `count` bytes ready. A run longer than the buffer is
    /// refused: the state's texts are far shorter, and a damaged length
    /// must not ask for memory it names.
    #[cold]
    fn fill(&mut self, count: usize) -> postcard::Result<()> {
        if count > self.buffer.len() {
            return Err(postcard::Error::DeserializeBadEncoding);
        }
        self.buffer.copy_within(self.at..self.end, 0);
        self.end -= self.at;
        self.at = 0;
        while self.end < count {
            match self.source.read(&mut self.buffer[self.end..]) {
                Ok(0) => return Err(postcard::Error::DeserializeUnexpectedEnd),
                Ok(read) => self.end += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(postcard::Error::DeserializeUnexpectedEnd),
            }
        }
        Ok(())
    }

    #[inline]
    fn take(&mut self, count: usize) -> postcard::Result<&[u8]> {
        if self.end - self.at < count {
            self.fill(count)?;
        }
        let taken = self.buffer.get(self.at..self.at + count).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.at += count;
        Ok(taken)
    }
}

/// Through a reference: the decoder owns its flavor, and the flavor's
/// borrows must outlive what it decodes, which owns all its data.
impl<'de, 'a: 'de> DecodeFlavor<'de> for &'de mut Reading<'a> {
    type Remainder = ();
    type Source = ();

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Borrowed data would outlive the buffer it is in: the state owns its
    /// data, so nothing asks for it.
    fn try_take_n(&mut self, _count: usize) -> postcard::Result<&'de [u8]> {
        Err(postcard::Error::DeserializeBadEncoding)
    }

    #[inline]
    fn try_take_n_temp<'b>(&'b mut self, count: usize) -> postcard::Result<&'b [u8]>
    where
        'de: 'b,
    {
        self.take(count)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        numbers: Vec<u64>,
        texts: Vec<String>,
        long_text: String,
        bytes: Vec<u8>,
        maybe: Option<(i64, bool)>,
    }

    fn sample() -> Sample {
        Sample {
            numbers: (0..50_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 64)).collect(),
            texts: (0..5_000).map(|i| format!("商户订单-{i}")).collect(),
            long_text: "支".repeat(CHUNK_BYTES / 3),
            bytes: (0..3 * CHUNK_BYTES).map(|i| i as u8).collect(),
            maybe: Some((-7, true)),
        }
    }

    /// Reads a few bytes at a time, as a reader may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
            let count = into.len().min(self.0.len()).min(7);
            into[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    #[test]
    fn encodes_the_same_bytes_as_postcard_and_decodes_them_back() {
        let value = sample();
        let mut chunked = Vec::new();
        encode_to(&value, &mut chunked).unwrap();
        assert_eq!(chunked, postcard::to_stdvec(&value).unwrap());
        assert_eq!(Decoder::new(&mut chunked.as_slice()).decode::<Sample>().unwrap(), value);
        assert_eq!(Decoder::new(&mut Trickle(&chunked)).decode::<Sample>().unwrap(), value);
    }

    #[test]
    fn encodes_after_what_the_buffer_holds_as_postcard_does() {
        let value = sample();
        let encoded = encode_into(&value, b"kept".to_vec()).unwrap();
        assert_eq!(&encoded[..4], b"kept");
        assert_eq!(encoded[4..], postcard::to_stdvec(&value).unwrap());
    }

    #[test]
    fn a_value_cut_short_is_an_error_not_a_panic() {
        let bytes = postcard::to_stdvec(&sample()).unwrap();
        for cut in [0, 1, 1_000, CHUNK_BYTES, bytes.len() - 1] {
            assert!(Decoder::new(&mut &bytes[..cut]).decode::<Sample>().is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_text_longer_than_a_chunk_is_refused() {
        let bytes = postcard::to_stdvec(&"x".repeat(CHUNK_BYTES + 1)).unwrap();
        assert_eq!(
            Decoder::new(&mut bytes.as_slice()).decode::<String>(),
            Err(postcard::Error::DeserializeBadEncoding)
        );
    }

    #[test]
    fn a_failing_writer_reports_its_own_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let error = encode_to(&sample(), &mut Full).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
    }
}
