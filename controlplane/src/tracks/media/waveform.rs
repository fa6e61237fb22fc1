//! Waveform peaks in BBC audiowaveform's JSON format, version 2:
//! `{"version":2,"channels":1,"sample_rate":48000,"samples_per_pixel":N,
//! "bits":8,"length":L,"data":[min0,max0,min1,max1,…]}`.
//!
//! One channel: each pixel's minimum and maximum of the mid signal
//! ((L + R) / 2), as audiowaveform computes without `--split-channels`,
//! scaled to −128..=127. The last pixel may cover fewer frames. Memory is
//! two bytes per pixel, bounded by the duration limit over
//! `samples_per_pixel`.

use std::io::BufWriter;

use serde::Serialize;

use super::renditions::StagedFiles;
use super::{MediaError, OUTPUT_SAMPLE_RATE_HZ, WAVEFORM_FILE_NAME};

/// The waveform being accumulated from interleaved stereo blocks.
pub(super) struct Waveform {
    samples_per_pixel: u32,
    data: Vec<i8>,
    pixel_min: f32,
    pixel_max: f32,
    pixel_frame_count: u32,
}

#[derive(Serialize)]
struct WaveformJson<'a> {
    version: u32,
    channels: u32,
    sample_rate: u32,
    samples_per_pixel: u32,
    bits: u32,
    length: usize,
    data: &'a [i8],
}

impl Waveform {
    pub fn new(samples_per_pixel: u32) -> Self {
        assert!(samples_per_pixel > 0, "validated by TranscodeConfig");
        Self {
            samples_per_pixel,
            data: Vec::new(),
            pixel_min: f32::MAX,
            pixel_max: f32::MIN,
            pixel_frame_count: 0,
        }
    }

    pub fn push(&mut self, interleaved_stereo: &[f32]) {
        for frame in interleaved_stereo.chunks_exact(2) {
            let mid = (frame[0] + frame[1]) * 0.5;
            self.pixel_min = self.pixel_min.min(mid);
            self.pixel_max = self.pixel_max.max(mid);
            self.pixel_frame_count += 1;
            if self.pixel_frame_count == self.samples_per_pixel {
                self.close_pixel();
            }
        }
    }

    fn close_pixel(&mut self) {
        self.data.push(to_8_bits(self.pixel_min));
        self.data.push(to_8_bits(self.pixel_max));
        self.pixel_min = f32::MAX;
        self.pixel_max = f32::MIN;
        self.pixel_frame_count = 0;
    }

    /// Closes the last pixel and writes `waveform.json` (staged, fsynced).
    pub fn write(mut self, staged: &mut StagedFiles) -> Result<(), MediaError> {
        if self.pixel_frame_count > 0 {
            self.close_pixel();
        }
        let json = WaveformJson {
            version: 2,
            channels: 1,
            sample_rate: OUTPUT_SAMPLE_RATE_HZ,
            samples_per_pixel: self.samples_per_pixel,
            bits: 8,
            length: self.data.len() / 2,
            data: &self.data,
        };
        let mut writer = BufWriter::new(staged.create(WAVEFORM_FILE_NAME)?);
        serde_json::to_writer(&mut writer, &json).map_err(std::io::Error::from)?;
        let file = writer.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        Ok(())
    }
}

fn to_8_bits(sample: f32) -> i8 {
    (sample * 128.0).round().clamp(-128.0, 127.0) as i8
}
