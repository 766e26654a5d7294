//! The archive's frame table: for each frame written, where its records
//! start among all records and where the frame starts in `archive.log`. A
//! full day writes about twenty million frames.
//!
//! In chunks of up to [`CHUNK_FRAMES`] frames, each frame two 32-bit
//! distances from its chunk's first: 8 bytes a frame. A `Vec<(u64, u64)>`
//! took 16, held up to twice that as it doubled, and held both copies at
//! the moment it grew (768 MiB at once by the end of a full day's
//! arrivals). A chunk never grows past the room it was made with.

/// Frames a chunk holds at most (512 KiB of distances).
const CHUNK_FRAMES: usize = 1 << 16;

struct Chunk {
    /// The chunk's first frame: its records' offset, its place in the file.
    first: (u64, u64),
    /// The number (among all frames) of the chunk's first frame.
    first_number: usize,
    /// Each frame's distances from `first` (the first frame's are zero).
    distances: Vec<[u32; 2]>,
}

impl Chunk {
    fn frame(&self, index: usize) -> Option<(u64, u64)> {
        let &[records, file] = self.distances.get(index)?;
        Some((self.first.0 + u64::from(records), self.first.1 + u64::from(file)))
    }
}

/// The frames, `CHUNK` to a chunk (fewer in tests, to cross many).
#[derive(Default)]
pub(crate) struct FrameTable<const CHUNK: usize = CHUNK_FRAMES> {
    chunks: Vec<Chunk>,
    len: usize,
}

/// Where a record offset's frame is: its number, its start and the next
/// frame's start (both as (records' offset, place in the file)).
pub(crate) struct Found {
    pub number: usize,
    pub start: (u64, u64),
    pub next: Option<(u64, u64)>,
}

/// `at`'s distances from `first`, if both fit 32 bits.
fn distances(first: (u64, u64), at: (u64, u64)) -> Option<[u32; 2]> {
    let records = u32::try_from(at.0.checked_sub(first.0)?).ok()?;
    let file = u32::try_from(at.1.checked_sub(first.1)?).ok()?;
    Some([records, file])
}

impl<const CHUNK: usize> FrameTable<CHUNK> {
    /// Adds the next frame; both its offsets are past the last frame's.
    pub fn push(&mut self, records_start: u64, file_start: u64) {
        let at = (records_start, file_start);
        if let Some(last) = self.chunks.last().and_then(|chunk| chunk.frame(chunk.distances.len() - 1)) {
            assert!(at.0 > last.0 && at.1 > last.1, "frame {at:?} does not follow frame {last:?}");
        }
        let room = self.chunks.last_mut().filter(|chunk| chunk.distances.len() < CHUNK);
        match room.and_then(|chunk| distances(chunk.first, at).map(|distances| (chunk, distances))) {
            Some((chunk, distances)) => chunk.distances.push(distances),
            None => {
                // A chunk closed early (a distance past 32 bits) gives back its room.
                if let Some(last) = self.chunks.last_mut() {
                    last.distances.shrink_to_fit();
                }
                let mut distances = Vec::with_capacity(CHUNK);
                distances.push([0, 0]);
                self.chunks.push(Chunk { first: at, first_number: self.len, distances });
            }
        }
        self.len += 1;
    }

    /// The frame that holds record offset `offset`: the last to start at
    /// or before it (none if the table is empty). `records_end`, where the
    /// last frame's records end, steers the search.
    pub fn find(&self, offset: u64, records_end: u64) -> Option<Found> {
        let after = self.chunks.partition_point(|chunk| chunk.first.0 <= offset);
        let chunk_index = after.checked_sub(1)?;
        let chunk = &self.chunks[chunk_index];
        let next_chunk = self.chunks.get(chunk_index + 1);
        // Every distance in a chunk fits 32 bits: one beyond compares alike.
        let distance = u32::try_from(offset - chunk.first.0).unwrap_or(u32::MAX);
        // Frames hold about the same bytes of records each: their starts
        // are spread evenly over the offsets.
        let chunk_end = next_chunk.map_or(records_end, |next| next.first.0);
        let guess = search::proportional_guess(offset, chunk.first.0, chunk_end, chunk.distances.len());
        let within = search::partition_point_near(&chunk.distances, guess, |&[records, _]| records <= distance) - 1;
        Some(Found {
            number: chunk.first_number + within,
            start: chunk.frame(within)?,
            next: chunk.frame(within + 1).or(next_chunk.map(|next| next.first)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;
    use proptest::prelude::*;

    /// A frame's number, start and the next frame's start.
    type Answer = Option<(usize, (u64, u64), Option<(u64, u64)>)>;

    /// What a plain list of frames says `find` should answer.
    fn expected(frames: &[(u64, u64)], offset: u64) -> Answer {
        let number = frames.partition_point(|&(start, _)| start <= offset).checked_sub(1)?;
        Some((number, frames[number], frames.get(number + 1).copied()))
    }

    fn found<const CHUNK: usize>(table: &FrameTable<CHUNK>, offset: u64, end: u64) -> Answer {
        table.find(offset, end).map(|found| (found.number, found.start, found.next))
    }

    proptest! {
        /// The table answers what a plain list of the frames answers, at
        /// each frame's start and either side of it, across chunks closed
        /// full (eight frames) and closed by a distance past 32 bits.
        #[test]
        fn answers_as_a_list_of_frames_does(
            steps in prop::collection::vec((1u64..5_000, 1u64..5_000, 0u32..20), 1..300),
        ) {
            let mut table = FrameTable::<8>::default();
            let mut frames: Vec<(u64, u64)> = Vec::new();
            let (mut records, mut file) = (10u64, 0u64);
            for &(record_step, file_step, far) in &steps {
                table.push(records, file);
                frames.push((records, file));
                // One step in twenty past 32 bits, in one offset or both.
                let jump = if far == 0 { 1 << 33 } else { 0 };
                records += record_step + jump;
                file += file_step + if far == 0 && record_step % 2 == 0 { jump } else { 0 };
            }
            let records_end = records;
            prop_assert_eq!(table.len, frames.len());
            for &(start, _) in &frames {
                for offset in [start - 1, start, start + 1] {
                    prop_assert_eq!(found(&table, offset, records_end), expected(&frames, offset));
                }
            }
            prop_assert_eq!(found(&table, records_end - 1, records_end), expected(&frames, records_end - 1));
        }
    }

    #[test]
    fn a_chunk_holds_its_number_of_frames_then_the_next_begins() {
        let mut table: FrameTable = FrameTable::default();
        for frame in 0..(CHUNK_FRAMES as u64 + 3) {
            table.push(frame * 100, frame * 40);
        }
        assert_eq!(table.chunks.len(), 2);
        assert_eq!(table.chunks[1].first_number, CHUNK_FRAMES);
        let boundary = CHUNK_FRAMES as u64;
        let at = |offset| found(&table, offset, (boundary + 3) * 100);
        assert_eq!(
            at(boundary * 100),
            Some((CHUNK_FRAMES, (boundary * 100, boundary * 40), Some(((boundary + 1) * 100, (boundary + 1) * 40))))
        );
        assert_eq!(
            at(boundary * 100 - 1),
            Some((
                CHUNK_FRAMES - 1,
                ((boundary - 1) * 100, (boundary - 1) * 40),
                Some((boundary * 100, boundary * 40))
            ))
        );
        assert_eq!(
            at((boundary + 2) * 100 + 99),
            Some((CHUNK_FRAMES + 2, ((boundary + 2) * 100, (boundary + 2) * 40), None))
        );
        assert_eq!(at(0).map(|found| found.0), Some(0));
        assert_eq!(found(&FrameTable::<8>::default(), 5, 10), None, "an empty table holds no offset");
    }

    #[test]
    #[should_panic(expected = "does not follow")]
    fn a_frame_out_of_order_is_refused() {
        let mut table: FrameTable = FrameTable::default();
        table.push(10, 10);
        table.push(10, 20);
    }
}
