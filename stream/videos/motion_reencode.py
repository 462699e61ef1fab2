"""Motion scored as Curator scores it: from the vectors of an x264 re-encode of the clip.

Curator's ClipTranscodingStage re-encodes every clip to H.264 (ffmpeg CLI, one encoder thread)
and its MotionVectorDecodeStage reads the vectors of that file. Curator 1.4 encodes with
h264_nvenc or libopenh264; this project's parity driver (scripts/_curator_driver.py) gives its
stage libx264 at veryfast/crf 23, and our libx264 at the same settings reproduces those clip
files' scores up to the x264 build. x264 codes near-still areas as skip blocks, which carry no
vector, so a patch that barely moves scores 0 there; a source's own encoder (a camera's, say)
often gives the same area small non-zero vectors from sensor noise, and the source's vectors
then pass clips Curator drops. ``motion_source="reencode"`` scores the re-encode instead: the
clip's media when it already is that encode (``--reencode --encoder libx264``), else an encode
of the clip's span made here only to be scored, with the run's --preset and --crf.

:func:`score_clip_bytes` is Curator's ``decode_for_motion`` + ``check_if_small_motion`` over one
clip file: every ``round(fps / 2)``-th decoded frame from the clip's first, frames without
vectors skipped, the first ``max(10, whole seconds)`` of them, per_patch_min_256 as Curator's
bilinear patch-centre sample.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av
from av.video.reformatter import VideoReformatter

from curastream.kernels.motion_score import MotionScore, aggregate_motion, unscored
from curastream.kernels.motion_vectors import (
    MV_MIN_SIDE,
    TOO_SMALL,
    MotionVectorReducer,
    curator_max_samples,
    curator_step,
)
from curastream.videos.clip_encode import cut_reencode
from curastream.videos.clip_facts import ClipMedia
from curastream.videos.motion_side_data import motion_vector_carrier, read_motion_vectors

# The encoder whose vectors Curator's scores come from (its transcode writes H.264; the preset and
# crf are the run's --preset/--crf: scripts/_curator_driver.py runs Curator's stage with libx264
# at veryfast/23, the defaults here too).
MOTION_ENCODER = "libx264"
# Curator's per_patch_min_256 samples each patch at its centre (cv2.resize); on the same bytes
# this gives its number exactly.
PATCH_STAT = "centre"
# Spans encoded from one decode of the source: their encodes are held until scored.
SPANS_PER_DECODE = 8


class MotionReencodeError(RuntimeError):
    """The clip's re-encode for motion could not be read."""


def reusable(media: ClipMedia | Exception | None, clip_mode: str, encoder: str) -> bool:
    """True when the clip's own media is the encode motion would make: a full libx264 re-encode
    at the run's preset and crf, from the span's first frame."""
    return (isinstance(media, ClipMedia) and media.method == "reencode" and clip_mode == "reencode"
            and encoder == MOTION_ENCODER)


def reencoded_motion(path: str, spans: Sequence[tuple[float, float]], media: Sequence[ClipMedia | Exception | None],
                     *, stream_index: int, clip_mode: str, encoder: str, preset: str, crf: int
                     ) -> list[MotionScore | Exception]:
    """Per span, Curator's motion score of its libx264 re-encode, or the Exception that stopped it.

    ``media``: the clips as cut (None in a dry run); where one already is that re-encode its bytes
    are scored, the other spans are encoded here (the clip's full span, as Curator's transcode)."""
    out: list[MotionScore | Exception | None] = [None] * len(spans)
    todo = []
    for k, m in enumerate(media):
        if reusable(m, clip_mode, encoder):
            out[k] = _score(m.data)
        else:
            todo.append(k)
    for lo in range(0, len(todo), SPANS_PER_DECODE):
        part = todo[lo:lo + SPANS_PER_DECODE]
        try:
            encoded = cut_reencode(path, [spans[k] for k in part], stream_index=stream_index,
                                   encoder=MOTION_ENCODER, preset=preset, crf=crf)
        except Exception as e:  # noqa: BLE001 - those clips' error, not the video's
            encoded = [e] * len(part)
        for k, m in zip(part, encoded):
            out[k] = m if isinstance(m, Exception) else _score(m.data)
    return out


def _score(data: bytes) -> MotionScore | Exception:
    try:
        return score_clip_bytes(data)
    except MotionReencodeError as e:
        return e


def score_clip_bytes(data: bytes) -> MotionScore:
    """Curator's motion score of one clip file (an MP4 whose first frame is the clip's first)."""
    try:
        with av.open(io.BytesIO(data), metadata_errors="ignore") as c:
            vs = c.streams.video[0]
            cc = vs.codec_context
            # Vectors are bitstream data: one thread reads the same ones as Curator's several.
            cc.thread_type = "NONE"
            cc.options = {"flags2": "+export_mvs"}
            fps = float(vs.average_rate) if vs.average_rate else float(vs.base_rate or 30)
            # Curator: int(stream.duration * int(time_base)) is 0 for any time base under 1 s, so
            # the container's whole seconds decide.
            secs = int(c.duration / int(av.time_base)) if c.duration else 0
            limit, step = curator_max_samples(float(secs)), curator_step(fps)
            reduce, samples = None, []
            carriers = VideoReformatter()
            for i, frame in enumerate(c.decode(vs)):
                if i % step:
                    continue
                if reduce is None:
                    if min(frame.width, frame.height) < MV_MIN_SIDE:
                        return unscored("motion_vectors", TOO_SMALL)
                    reduce = MotionVectorReducer(frame.width, frame.height)
                # never frame.side_data: see videos/motion_side_data.py
                sample = read_motion_vectors(motion_vector_carrier(frame, carriers),
                                             lambda mvs: reduce(mvs, frame_index=i, time=i / fps))
                if sample is None:
                    continue
                samples.append(sample)
                if len(samples) >= limit:
                    break
    except (av.FFmpegError, IndexError, ValueError) as e:
        raise MotionReencodeError(f"cannot read the re-encode's motion vectors: {e}") from e
    return aggregate_motion(samples, method="motion_vectors", patch_stat=PATCH_STAT)
