//! The duration of an uploaded audio file, for a per-second price when
//! the upstream's answer gave none (`response_format` `text`, `srt` or
//! `vtt`; a `json` answer without a usage of type `duration`).
//!
//! Only symphonia's container readers are used (WAV, MP3, FLAC, Ogg,
//! MP4/M4A, Matroska/WebM), never a decoder: the duration a container
//! states for the audio track (WAV's data size, an MP3's Xing/LAME frame
//! count less the encoder's delay and padding, FLAC's STREAMINFO, an MP4's
//! track duration), checked against the sum of its packets' durations
//! read without decoding them. A statement shorter than the packets by
//! more than an encoder's delay and padding (8,719 samples) is the
//! client's word against the audio, and the packets are charged: a file
//! cannot state much less audio than it holds. It runs on a blocking thread, once the response is over,
//! over the upload's stored bytes ([`super::upload::Audio`]); a file that is
//! none of these, or broken, is reported as an error, which the record
//! names (`audio_source: "unknown"`).

use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::TimeBase;

use super::upload::{Audio, UploadFile};

impl MediaSource for UploadFile {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len())
    }
}

/// Milliseconds of audio in the upload's file, or why they cannot be told.
pub fn of_upload(audio: &Audio) -> Result<u64, String> {
    let (file, name) = audio.file()?;
    // A reader of untrusted bytes: a panic in it must not lose the record.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        measure(Box::new(file), &name)
    }))
    .unwrap_or_else(|_| Err("the audio file could not be read".into()))
}

/// Milliseconds of audio in `source`, a file named `name` (its extension
/// is a hint; the bytes decide).
pub fn measure(source: Box<dyn MediaSource>, name: &str) -> Result<u64, String> {
    let stream = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some((_, ext)) = name.rsplit_once('.') {
        hint.with_extension(&ext.to_ascii_lowercase());
    }
    let mut reader = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| format!("not a known audio format ({e})"))?;
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or("the file has no audio track")?;
    let id = track.id;
    let time_base = track.time_base.or_else(|| {
        // One tick a sample, when the container names no time base.
        match &track.codec_params {
            Some(symphonia::core::codecs::CodecParameters::Audio(p)) => {
                p.sample_rate.and_then(|r| TimeBase::try_new(1, r))
            }
            _ => None,
        }
    });
    let time_base = time_base.ok_or("the audio track has no time base")?;
    // What the container states is the client's word (an MP3's Xing frame
    // count, an MP4's track duration), while the upstream bills the audio
    // it hears: every packet is counted too, without decoding. The
    // statement stands when it is at most an encoder's delay and padding
    // short of the count ([`GAPLESS_SLACK`]); else the count is charged.
    let stated = track.duration.map(|d| d.get());
    let mut ticks = 0u64;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) if p.track_id == id => ticks = ticks.saturating_add(p.dur.get()),
            Ok(Some(_)) => {}
            Ok(None) => break,
            // A damaged end: what was read before it counts.
            Err(_) if ticks > 0 || stated.is_some() => break,
            Err(e) => return Err(format!("the audio could not be read ({e})")),
        }
    }
    let charged = match stated {
        Some(st) if st >= ticks || ticks - st <= gapless_slack(time_base) => st,
        _ => ticks,
    };
    Ok(millis(charged, time_base))
}

/// The most an encoder's delay and padding take from the frames a file
/// holds, in samples: LAME's tag states each in 12 bits, and the decoder
/// adds 529 samples of delay (an MP4's AAC priming is less). A statement
/// shorter than the frames by more is not believed.
const GAPLESS_SLACK: u64 = 4095 + 529 + 4095;

/// [`GAPLESS_SLACK`] in ticks of `time_base` (a sample's tick for audio
/// containers; none where a tick is longer than a millisecond, which no
/// audio container uses).
fn gapless_slack(time_base: TimeBase) -> u64 {
    let (numer, denom) = (
        u64::from(time_base.numer.get()),
        u64::from(time_base.denom.get()),
    );
    if numer == 1 && denom >= 8000 {
        GAPLESS_SLACK
    } else {
        0
    }
}

/// `ticks` of `time_base` in milliseconds, rounded half up.
fn millis(ticks: u64, time_base: TimeBase) -> u64 {
    let num = u128::from(ticks) * u128::from(time_base.numer.get()) * 1000;
    let den = u128::from(time_base.denom.get());
    u64::try_from((num + den / 2) / den).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A mono 16-bit PCM WAV of `frames` frames at `rate`.
    fn wav(frames: u32, rate: u32) -> Vec<u8> {
        let data = frames * 2;
        let mut w = b"RIFF".to_vec();
        w.extend_from_slice(&(36 + data).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&1u16.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&(rate * 2).to_le_bytes());
        w.extend_from_slice(&2u16.to_le_bytes());
        w.extend_from_slice(&16u16.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&data.to_le_bytes());
        w.extend((0..data).map(|i| (i % 7) as u8));
        w
    }

    fn of(bytes: Vec<u8>, name: &str) -> Result<u64, String> {
        measure(Box::new(Cursor::new(bytes)), name)
    }

    #[test]
    fn a_wav_states_its_frames() {
        assert_eq!(of(wav(12_000, 8000), "a.wav"), Ok(1500));
        // Rounded half up to the millisecond; the name is only a hint.
        assert_eq!(of(wav(12_004, 8000), "no-extension"), Ok(1501));
        assert_eq!(of(wav(0, 16_000), "empty.wav"), Ok(0));
    }

    #[test]
    fn an_mp3_is_measured_by_its_header_else_its_frames() {
        // dataplane/testdata/tone.mp3: 1.0 s at 16 kHz (16,000 samples)
        // by LAME at 64 kb/s, with its Info tag (the frame count, the
        // encoder's delay and padding): exactly 1 s.
        let mp3 = include_bytes!("../../testdata/tone.mp3");
        assert_eq!(of(mp3.to_vec(), "tone.mp3"), Ok(1000));
        // The same without the tag (lame -t): its 30 frames of 576
        // samples, delay and padding included, 17,280 / 16,000 s.
        let bare = include_bytes!("../../testdata/tone-noxing.mp3");
        assert_eq!(of(bare.to_vec(), "tone"), Ok(1080));
    }

    /// A file that states less audio than it holds is charged for what it
    /// holds: an Info tag forged to say one frame.
    #[test]
    fn a_forged_frame_count_does_not_shorten_an_mp3() {
        let mut mp3 = include_bytes!("../../testdata/tone.mp3").to_vec();
        let at = mp3
            .windows(4)
            .position(|w| w == b"Info" || w == b"Xing")
            .expect("LAME's Info tag");
        let flags = u32::from_be_bytes(mp3[at + 4..at + 8].try_into().unwrap());
        assert_eq!(flags & 1, 1, "the tag carries a frame count");
        mp3[at + 8..at + 12].copy_from_slice(&1u32.to_be_bytes());
        let ms = of(mp3, "forged.mp3").unwrap();
        assert!(ms >= 1000, "{ms} ms");
    }

    #[test]
    fn what_is_not_audio_is_an_error() {
        let e = of(b"hello, not audio at all".repeat(100), "a.wav").unwrap_err();
        assert!(e.contains("not a known audio format"), "{e}");
        assert!(of(Vec::new(), "a.mp3").is_err());
        // A WAV cut inside its header.
        assert!(of(wav(100, 8000)[..30].to_vec(), "a.wav").is_err());
    }

    #[test]
    fn milliseconds_round_half_up() {
        let tb = |n, d| TimeBase::try_new(n, d).unwrap();
        assert_eq!(millis(1, tb(1, 2000)), 1);
        assert_eq!(millis(1, tb(1, 2001)), 0);
        assert_eq!(millis(48_000 * 3, tb(1, 48_000)), 3000);
        assert_eq!(millis(u64::MAX, tb(u32::MAX, 1)), u64::MAX);
    }
}
