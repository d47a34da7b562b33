//! The sending side of a slice: reads an object's bytes and outboard (both seekable, a file
//! or memory) in the walk's order and produces the slice a holder streams for a range.
//! It trusts what it reads (the store verified it when it was written or scrubbed).

use std::io::{self, Read, SeekFrom};

use bytes::Bytes;

use super::walk::{Node, Walk, check_range};
use super::{HEADER, PARENT, ReadSeek};

/// Produces the slice of `start..start+count` of an object from its bytes and outboard.
pub struct SliceEncoder {
    data: Box<dyn ReadSeek>,
    outboard: Box<dyn ReadSeek>,
    /// Where each reader stands, so sequential reads do not seek (a seek drops a
    /// `BufReader`'s buffer).
    data_at: Option<u64>,
    outboard_at: Option<u64>,
    len: u64,
    walk: Walk,
    /// Bytes produced and not yet read out.
    buf: Vec<u8>,
    pos: usize,
    header_sent: bool,
}

impl SliceEncoder {
    /// An encoder for `start..start+count` of an object of `len` bytes.
    pub fn new(
        data: impl ReadSeek + 'static,
        outboard: impl ReadSeek + 'static,
        len: u64,
        start: u64,
        count: u64,
    ) -> io::Result<SliceEncoder> {
        let end = check_range(len, start, count)?;
        Ok(SliceEncoder {
            data: Box::new(data),
            outboard: Box::new(outboard),
            data_at: None,
            outboard_at: None,
            len,
            walk: Walk::new(len, start, end),
            buf: Vec::new(),
            pos: 0,
            header_sent: false,
        })
    }

    /// Fills `buf` with the next piece of the slice; false at the end.
    fn produce(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.pos = 0;
        if !self.header_sent {
            self.header_sent = true;
            self.buf.extend_from_slice(&self.len.to_le_bytes());
            return Ok(true);
        }
        match self.walk.next() {
            None => Ok(false),
            Some(Node::Parent { index, .. }) => {
                let at = index * PARENT as u64;
                if self.outboard_at != Some(at) {
                    self.outboard.seek(SeekFrom::Start(at))?;
                }
                self.outboard_at = None;
                self.buf.resize(PARENT, 0);
                self.outboard.read_exact(&mut self.buf)?;
                self.outboard_at = Some(at + PARENT as u64);
                Ok(true)
            }
            Some(Node::Group { start, len, .. }) => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.resize(len as usize, 0);
                let read = self.read_group(start, &mut buf);
                self.buf = buf;
                read.map(|()| true)
            }
        }
    }

    /// Appends `len` bytes of the slice to `out`: the next group straight from the data,
    /// in one read, if that is what comes next (a decoder in step with this encoder asks
    /// for nothing else), or else the bytes `Read` would give. How many bytes it appended.
    pub(super) fn group_into(&mut self, out: &mut Vec<u8>, len: u64) -> io::Result<usize> {
        if self.pos == self.buf.len()
            && self.header_sent
            && let Some(&Node::Group {
                start, len: next, ..
            }) = self.walk.peek()
            && next == len
            && let Ok(n) = usize::try_from(len)
        {
            self.walk.next();
            // One read of the whole group (zeroed first): a buffered file hands it over
            // past its buffer, where `read_to_end`'s smaller reads would go through it.
            let at = out.len();
            out.resize(at + n, 0);
            if let Err(e) = self.read_group(start, &mut out[at..]) {
                out.truncate(at);
                return Err(e);
            }
            return Ok(n);
        }
        Read::by_ref(self).take(len).read_to_end(out)
    }

    /// Reads the group at `start` from the data into `into`, which it fills.
    fn read_group(&mut self, start: u64, into: &mut [u8]) -> io::Result<()> {
        if self.data_at != Some(start) {
            self.data.seek(SeekFrom::Start(start))?;
        }
        self.data_at = None;
        self.data.read_exact(into)?;
        self.data_at = Some(start + into.len() as u64);
        Ok(())
    }
}

impl SliceEncoder {
    /// The next piece of the slice, at most `max` bytes (but at least one whole node), cut
    /// only between nodes: a piece holds whole groups, so the receiver hashes each group
    /// where it lies, never gathering one split across two frames. Groups are read from
    /// the data straight into the piece handed out. `None` at the end.
    ///
    /// Meant to be the only way a given encoder is read (mixing it with `Read` works, but
    /// a piece then starts with what `read` left of a node).
    pub fn next_piece(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        let mut piece = Vec::new();
        // What a `read` left of the node it was producing.
        if self.pos < self.buf.len() {
            piece.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
        }
        if !self.header_sent {
            self.header_sent = true;
            piece.reserve_exact(max.max(HEADER));
            piece.extend_from_slice(&self.len.to_le_bytes());
        }
        loop {
            let size = match self.walk.peek() {
                None => break,
                Some(Node::Parent { .. }) => PARENT,
                Some(Node::Group { len, .. }) => *len as usize,
            };
            if !piece.is_empty() && piece.len() + size > max {
                break;
            }
            if piece.capacity() == 0 {
                piece.reserve_exact(max.max(size));
            }
            let (input, at, len, pos) = match self.walk.next() {
                None => break,
                Some(Node::Parent { index, .. }) => (
                    &mut self.outboard,
                    index * PARENT as u64,
                    PARENT as u64,
                    &mut self.outboard_at,
                ),
                Some(Node::Group { start, len, .. }) => {
                    (&mut self.data, start, len, &mut self.data_at)
                }
            };
            if pos.take() != Some(at) {
                input.seek(SeekFrom::Start(at))?;
            }
            // One read of the whole node, into room zeroed first: a file behind a buffer
            // of a group's size hands a group over past that buffer, where `read_to_end`'s
            // 8 KiB reads would each be copied through it. The memset costs less than that
            // copy (5 against 12 ms per 256 MiB served, measured).
            let from = piece.len();
            piece.resize(from + size, 0);
            input.read_exact(&mut piece[from..])?;
            *pos = Some(at + len);
        }
        Ok((!piece.is_empty()).then(|| Bytes::from(piece)))
    }
}

impl SliceEncoder {
    /// Whether every byte of the slice has been produced and read out.
    pub fn is_done(&self) -> bool {
        self.header_sent && self.pos == self.buf.len() && self.walk.is_done()
    }
}

impl Read for SliceEncoder {
    /// A read with room for the whole next group (what a decoder asks) takes it straight
    /// from the data, not through this encoder's buffer. After an error the encoder's
    /// place in the slice is lost: its reader stops there (a decoder does).
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len()
            && self.header_sent
            && let Some(&Node::Group { start, len, .. }) = self.walk.peek()
            && len > 0
            && let Some(into) = out.get_mut(..len as usize)
        {
            self.walk.next();
            self.read_group(start, into)?;
            return Ok(into.len());
        }
        while self.pos == self.buf.len() {
            if !self.produce()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
