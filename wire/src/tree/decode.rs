//! Reading a slice from a `Read` (a file, a socket adapter) and yielding only verified
//! bytes. Every byte is moved once, from the input into the buffer it is verified in: a
//! group is read straight into the piece [`SliceDecoder::next_verified`] hands out (into
//! spare capacity, not zeroed first, when the input implements `read_buf` as `Cursor` and
//! `File` do), or into one group buffer kept for `Read::read`, zeroed once. A decoder of
//! an encoder's slice ([`SliceDecoder::of_encoder`], a store verifying what it reads)
//! takes each group from the encoder's data the same way, past the encoder's buffer. A
//! caller that owns the slice's bytes already (`Bytes` from the network) should use
//! [`super::SliceVerifier`], which does not copy them at all.

use std::io::{self, Read};

use super::check::{Checker, Need, SliceError};
use super::{GROUP, HEADER, Hash, PARENT, SliceEncoder};

/// Reads a slice of `start..start+count` of the object `hash` and yields its verified
/// bytes; `InvalidData` (wrapping a [`SliceError`]) at the first parent or group that does
/// not verify (or a length claim that cannot be), `UnexpectedEof` if the slice ends early.
/// After an error every later call fails too.
pub struct SliceDecoder {
    input: Input,
    hash: Hash,
    start: u64,
    count: u64,
    checker: Option<Checker>,
    /// The last group `read` verified (kept at `GROUP` bytes once grown, so it is zeroed
    /// once); `buf[pos..end]` is what is left of its part in the range.
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The first error, returned again by every later call.
    failed: Option<io::ErrorKind>,
}

/// Where a decoder reads the slice.
enum Input {
    /// Any reader of the slice's bytes.
    Reader(Box<dyn Read + Send>),
    /// An encoder of the same range, in step with the decoder: a group comes from its
    /// data straight into the piece handed out.
    Encoder(Box<SliceEncoder>),
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Input::Reader(r) => r.read(out),
            Input::Encoder(e) => e.read(out),
        }
    }
}

/// What [`SliceDecoder::next_node`] found.
enum Next {
    /// A parent, read and verified.
    Parent,
    /// A group of this many bytes, not read yet.
    Group(usize),
    /// The end of the slice.
    End,
}

impl SliceDecoder {
    /// A decoder of the slice of `start..start+count` of the object `hash`.
    pub fn new(
        input: impl Read + Send + 'static,
        hash: &Hash,
        start: u64,
        count: u64,
    ) -> SliceDecoder {
        SliceDecoder::with(Input::Reader(Box::new(input)), hash, start, count)
    }

    /// A decoder of the slice `encoder` produces (of the same range): what a store runs to
    /// verify its own bytes as it reads them, each group moved once, from the encoder's
    /// data into the piece [`next_verified`](Self::next_verified) hands out.
    pub fn of_encoder(encoder: SliceEncoder, hash: &Hash, start: u64, count: u64) -> SliceDecoder {
        SliceDecoder::with(Input::Encoder(Box::new(encoder)), hash, start, count)
    }

    fn with(input: Input, hash: &Hash, start: u64, count: u64) -> SliceDecoder {
        SliceDecoder {
            input,
            hash: *hash,
            start,
            count,
            checker: None,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            failed: None,
        }
    }

    /// The object length the slice claims (authenticated once the final group verified).
    pub fn claimed_len(&self) -> Option<u64> {
        self.checker.as_ref().map(Checker::len)
    }

    /// The next verified bytes of the range, as an owned buffer of at least `at_least`
    /// bytes (whole groups, read straight into it; fewer only at the end of the range);
    /// `None` at the end.
    pub fn next_verified(&mut self, at_least: usize) -> io::Result<Option<Vec<u8>>> {
        self.guard(|d| d.gather(at_least))
    }

    /// Runs `f`, failing at once if an earlier call failed and remembering a new failure.
    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "the slice failed earlier"));
        }
        let r = f(self);
        if let Err(e) = &r {
            self.failed = Some(e.kind());
        }
        r
    }

    /// The checker, once the length header was read.
    fn checker(&mut self) -> io::Result<&mut Checker> {
        if self.checker.is_none() {
            let mut header = [0u8; HEADER];
            self.input.read_exact(&mut header)?;
            self.checker = Some(Checker::new(&self.hash, self.start, self.count, header)?);
        }
        // Just set if it was not: never `None` here.
        self.checker
            .as_mut()
            .ok_or_else(|| SliceError::Truncated.into())
    }

    /// Reads and checks the next node if it is a parent; says what it was.
    fn next_node(&mut self) -> io::Result<Next> {
        let need = self.checker()?.need()?;
        match need {
            None => Ok(Next::End),
            Some(Need::Parent) => {
                let mut pair = [0u8; PARENT];
                self.input.read_exact(&mut pair)?;
                self.checker()?.parent(&pair)?;
                Ok(Next::Parent)
            }
            Some(Need::Group { len }) => Ok(Next::Group(len)),
        }
    }

    fn gather(&mut self, at_least: usize) -> io::Result<Option<Vec<u8>>> {
        let want = at_least.max(1);
        let mut out = Vec::new();
        if self.pos < self.end {
            // Left over from `read`.
            out.extend_from_slice(&self.buf[self.pos..self.end]);
            self.pos = self.end;
        }
        while out.len() < want {
            let len = match self.next_node()? {
                Next::Parent => continue,
                Next::End => break,
                Next::Group(len) => len,
            };
            if out.capacity() - out.len() < len {
                // Room for whole groups up to `want` at once: no regrowth (and its copy).
                let groups = (want - out.len()).div_ceil(GROUP as usize).max(1);
                out.reserve_exact(groups * GROUP as usize);
            }
            let at = out.len();
            let got = match &mut self.input {
                Input::Encoder(e) => e.group_into(&mut out, len as u64)?,
                Input::Reader(r) => Read::by_ref(r).take(len as u64).read_to_end(&mut out)?,
            };
            if got < len {
                return Err(SliceError::Truncated.into());
            }
            let keep = self.checker()?.group([&out[at..]])?;
            out.truncate(at + keep.end);
            out.drain(at..at + keep.start);
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Verifies the next group into `buf`; false at the end of the slice.
    fn step(&mut self) -> io::Result<bool> {
        let len = match self.next_node()? {
            Next::Parent => return Ok(true),
            Next::End => return Ok(false),
            Next::Group(len) => len,
        };
        if self.buf.len() < len {
            self.buf.resize(GROUP as usize, 0);
        }
        let group = &mut self.buf[..len];
        self.input.read_exact(group)?;
        let keep = self
            .checker
            .as_mut()
            .ok_or(SliceError::Truncated)?
            .group([&*group])?;
        self.pos = keep.start;
        self.end = keep.end;
        Ok(true)
    }
}

impl Read for SliceDecoder {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.guard(|d| {
            while d.pos == d.end {
                if !d.step()? {
                    return Ok(0);
                }
            }
            let n = out.len().min(d.end - d.pos);
            out[..n].copy_from_slice(&d.buf[d.pos..d.pos + n]);
            d.pos += n;
            Ok(n)
        })
    }
}
