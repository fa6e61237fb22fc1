//! Output files: one Ogg Opus stream per rung, and the staging that makes
//! a track's files appear all at once or not at all.
//!
//! Every file is written as `{name}.tmp`, fsynced, and renamed into place
//! only when all of them are complete; then the directory is fsynced so the
//! renames survive a crash. Until [`StagedFiles::commit`] succeeds, dropping
//! the [`StagedFiles`] removes every file it created.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use veza_codec::ogg::{write_page, LastPacket, OggOpusPager, OpusHead, OpusTags, HEADER_TYPE_EOS};
use veza_codec::opus_ladder::FRAME_SAMPLE_COUNT;

use super::{MediaError, RenditionFile, OUTPUT_CHANNEL_COUNT, OUTPUT_SAMPLE_RATE_HZ};

/// The vendor string of every rendition's `OpusTags`.
const VENDOR: &str = "Veza";

/// Files written under temporary names, renamed together on commit.
pub(super) struct StagedFiles {
    directory: PathBuf,
    /// (temporary path, final path) of every file created.
    files: Vec<(PathBuf, PathBuf)>,
    /// Final paths already renamed into place (removed if commit fails).
    renamed: Vec<PathBuf>,
    is_committed: bool,
}

impl StagedFiles {
    pub fn new(directory: &Path) -> Self {
        Self {
            directory: directory.to_path_buf(),
            files: Vec::new(),
            renamed: Vec::new(),
            is_committed: false,
        }
    }

    /// Creates `{name}.tmp` (truncating a stale one), to become `{name}`.
    pub fn create(&mut self, name: &str) -> Result<File, MediaError> {
        let final_path = self.directory.join(name);
        let temporary_path = self.directory.join(format!("{name}.tmp"));
        let file = File::create(&temporary_path)?;
        self.files.push((temporary_path, final_path));
        Ok(file)
    }

    /// Renames every file into place and fsyncs the directory. The files
    /// themselves must already be fsynced.
    pub fn commit(mut self) -> Result<(), MediaError> {
        for (temporary_path, final_path) in &self.files {
            std::fs::rename(temporary_path, final_path)?;
            self.renamed.push(final_path.clone());
        }
        File::open(&self.directory)?.sync_all()?;
        self.is_committed = true;
        Ok(())
    }
}

impl Drop for StagedFiles {
    fn drop(&mut self) {
        if self.is_committed {
            return;
        }
        // Best effort: a file that cannot be removed is left for the job's
        // own clean-up of the output directory.
        for (temporary_path, _) in &self.files {
            let _ = std::fs::remove_file(temporary_path);
        }
        for final_path in &self.renamed {
            let _ = std::fs::remove_file(final_path);
        }
    }
}

/// One rung's Ogg Opus file being written.
///
/// The last packet is held back so that it can go on the EOS page with the
/// end-trimmed granule position (RFC 7845 §4.5), which
/// [`OggOpusPager::finish`] cannot write: its last granule is always the
/// sum of the packets' durations.
pub(super) struct RenditionWriter {
    bitrate_kbps: u32,
    file_name: String,
    writer: BufWriter<File>,
    pager: OggOpusPager,
    pre_skip: u16,
    held_packet: Vec<u8>,
    has_held_packet: bool,
    size_bytes: u64,
    /// The first write error; packets arrive through a callback that
    /// cannot fail, so it is reported by [`RenditionWriter::finish`].
    write_error: Option<std::io::Error>,
}

impl RenditionWriter {
    pub fn create(
        staged: &mut StagedFiles,
        bitrate_kbps: u32,
        pre_skip: u16,
        page_duration_samples: u32,
    ) -> Result<Self, MediaError> {
        let file_name = format!("{bitrate_kbps}.opus");
        let file = staged.create(&file_name)?;
        let head = OpusHead {
            version: 1,
            channel_count: OUTPUT_CHANNEL_COUNT,
            pre_skip,
            input_sample_rate: OUTPUT_SAMPLE_RATE_HZ,
            output_gain_q8: 0,
            mapping_family: 0,
            mapping: Vec::new(),
        };
        let tags = OpusTags {
            vendor: VENDOR.into(),
            comments: Vec::new(),
        };
        // Deterministic serials (see the module docs of `media`), distinct
        // per rung.
        let serial = u32::from_be_bytes(*b"Vz\0\0") | bitrate_kbps;
        let pager = OggOpusPager::new(serial, &head, &tags, page_duration_samples);
        let mut rendition = Self {
            bitrate_kbps,
            file_name,
            writer: BufWriter::new(file),
            pre_skip,
            held_packet: Vec::new(),
            has_held_packet: false,
            size_bytes: 0,
            write_error: None,
            pager,
        };
        let header_pages = rendition.pager.header_pages();
        rendition.write(&header_pages);
        Ok(rendition)
    }

    /// Takes the next packet (always one 20 ms frame).
    pub fn push_packet(&mut self, packet: &[u8]) {
        if self.has_held_packet {
            if let Some(pages) = self
                .pager
                .push_packet(&self.held_packet, FRAME_SAMPLE_COUNT as u32)
            {
                self.write(&pages);
            }
        }
        self.held_packet.clear();
        self.held_packet.extend_from_slice(packet);
        self.has_held_packet = true;
    }

    /// Writes the last packet on the EOS page with granule position
    /// `pre_skip + source_frame_count`, then flushes and fsyncs.
    pub fn finish(mut self, source_frame_count: u64) -> Result<RenditionFile, MediaError> {
        assert!(self.has_held_packet, "a rendition has at least one packet");
        if let Some(pages) = self.pager.flush() {
            self.write(&pages);
        }
        let final_granule = u64::from(self.pre_skip) + source_frame_count;
        let granule_before = self.pager.granule_position();
        // End trimming may cut less than the last packet, never more.
        debug_assert!(final_granule > granule_before);
        debug_assert!(final_granule <= granule_before + FRAME_SAMPLE_COUNT as u64);
        let mut page = BytesMut::new();
        write_page(
            HEADER_TYPE_EOS,
            final_granule,
            self.pager.serial(),
            self.pager.sequence_next(),
            &[&self.held_packet],
            LastPacket::Complete,
            &mut page,
        )
        .map_err(|error| MediaError::Encode(error.detail()))?;
        self.write(&page);
        if let Some(error) = self.write_error.take() {
            return Err(error.into());
        }
        let file = self
            .writer
            .into_inner()
            .map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(RenditionFile {
            bitrate_kbps: self.bitrate_kbps,
            file_name: self.file_name,
            size_bytes: self.size_bytes,
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.write_error.is_some() {
            return;
        }
        match self.writer.write_all(bytes) {
            Ok(()) => self.size_bytes += bytes.len() as u64,
            Err(error) => self.write_error = Some(error),
        }
    }
}
