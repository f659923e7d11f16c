"""Codec configuration: one dataclass, saved as ``config.json`` next to ``model.safetensors``."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from uniaudio_cli.errors import CheckpointError

FORMAT_NAME = "uniaudio-llm-codec"
FORMAT_VERSION = 1

Backbone = Literal["small", "published"]
ResidualSearch = Literal["cosine", "euclidean"]
RESIDUAL_SEARCHES: tuple[str, ...] = get_args(ResidualSearch)
# The post-filter exponents a checkpoint may set: beyond them the filter only distorts.
CONTRAST_RANGE = (0.5, 2.0)
# The widest envelope the post-filter may smooth over, in STFT bins (and it must be odd).
MAX_CONTRAST_SMOOTH = 63


def valid_contrast(value: object) -> bool:
    """Whether ``value`` is a ``small_contrast`` a config may hold: a number (not a bool) in
    :data:`CONTRAST_RANGE`."""
    lo, hi = CONTRAST_RANGE
    return isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi


def valid_contrast_smooth(value: object) -> bool:
    """Whether ``value`` is a ``small_contrast_smooth`` a config may hold: 0, or an odd integer
    (not a bool) up to :data:`MAX_CONTRAST_SMOOTH`."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value == 0 or (value % 2 == 1 and 0 < value <= MAX_CONTRAST_SMOOTH))
    )


@dataclass
class VocabSpec:
    """Which LLM vocabulary the frozen codebooks come from.

    Codebooks are not stored in checkpoints; they are rebuilt from the LLM at load time and
    checked against this record.

    Attributes:
        llm: human-readable name of the LLM / tokenizer the codec was built on.
        vocab_size: rows of the LLM's input-embedding table.
        embedding_dim: columns of that table.
        embedding_sha256: fingerprint of the table (see ``vocab.embedding_fingerprint``).
        layer1_token_ids: LLM token ids of the word-level layer-1 codebook, in code order.
        excluded_token_ids: token ids layers 2-3 never emit (the LLM's special/control tokens).
    """

    llm: str
    vocab_size: int
    embedding_dim: int
    embedding_sha256: str
    layer1_token_ids: list[int]
    excluded_token_ids: list[int] = field(default_factory=list)


@dataclass
class CodecConfig:
    """Sizes of an LLM-Codec.

    Two backbones share the multi-scale quantizer:

    * ``published``: the UniAudio 1.5 waveform architecture (SEANet-style convs with Snake,
      windowed attention, NoiseBlocks); fields ``encoder_*``, ``decoder_*``, ``attn_window_size``,
      ``noise``, ``depthwise``.
    * ``small``: a frame-rate ConvNeXt encoder/decoder with an inverse-STFT head that trains and
      runs fast on a CPU; fields ``small_*`` (``small_fine_layers``: decoder blocks at the STFT
      rate, after upsampling, where harmonic detail is drawn; ``small_harmonic``: the head's phase
      follows a harmonic oscillator at a predicted pitch, see :mod:`uniaudio_cli.codec.small`;
      ``small_contrast``: the exponent of the head's spectral-contrast post-filter, see
      :func:`~uniaudio_cli.codec.small.spectral_contrast`; 1.0 is off, and training always runs
      at 1.0, so it is set on an exported checkpoint; ``small_contrast_smooth``: 0 raises the
      whole magnitude, an odd width in bins raises only the envelope, the log magnitude averaged
      over that many bins).

    ``hop_length`` samples make one latent frame; layer ``i`` emits one code every
    ``vq_strides[i]`` frames.

    ``residual_search`` is how encoding (and training) picks the codes of the layers after the
    first (the semantic layer always takes the cosine nearest row): ``cosine`` (the paper's
    rule), or ``euclidean``: the projected row nearest the residual in Euclidean
    distance, which leaves a smaller quantization error for the decoder (see
    :meth:`~uniaudio_cli.codec.quantizer.LLMVectorQuantizer.nearest_euclidean`). Decoding and
    the token vocabulary are the same under both.

    ``codebook_map_hidden``: the frozen LLM rows reach the latent space through a learned linear
    map (the paper's, and the only one at 0); above 0, the layers after the first add a residual
    MLP of this width (``quantizers.{i}.cb_mlp``) to it, so that where the 49k projected rows
    fall is learned too, not fixed by a linear image of the embedding table.
    """

    backbone: Backbone = "small"
    sample_rate: int = 16000
    latent_dim: int = 256
    vq_strides: list[int] = field(default_factory=lambda: [4, 2, 1])
    codebook_sizes: list[int] = field(default_factory=lambda: [3000, 49152, 49152])
    codebook_dims: list[int] = field(default_factory=lambda: [576, 576, 576])
    # published backbone
    encoder_dim: int = 32
    encoder_rates: list[int] = field(default_factory=lambda: [3, 4, 5, 8])
    decoder_dim: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [8, 5, 4, 3])
    attn_window_size: int = 8
    noise: bool = True
    depthwise: bool = True
    # small backbone
    small_hop: int = 480
    small_n_fft: int = 640
    small_stft_hop: int = 160
    small_dim: int = 256
    small_intermediate: int = 768
    small_encoder_layers: int = 4
    small_decoder_layers: int = 6
    small_fine_layers: int = 1
    small_harmonic: bool = False
    small_contrast: float = 1.0
    small_contrast_smooth: int = 0
    residual_search: ResidualSearch = "cosine"
    codebook_map_hidden: int = 0
    vocab: VocabSpec | None = None

    @property
    def hop_length(self) -> int:
        if self.backbone == "published":
            return math.prod(self.encoder_rates)
        return self.small_hop

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def tokens_per_second(self) -> float:
        return sum(self.frame_rate / s for s in self.vq_strides)

    @property
    def pad_multiple(self) -> int:
        """Inputs are right-padded to a multiple of this many samples before encoding."""
        window = self.attn_window_size if self.backbone == "published" else 1
        return self.hop_length * math.lcm(self.vq_strides[0], window or 1)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> CodecConfig:
        data = dict(data)
        fmt = data.pop("format", None)
        version = data.pop("format_version", None)
        if fmt != FORMAT_NAME:
            raise CheckpointError(
                f"{source}: not a uniaudio codec config (format={fmt!r})",
                "point --codec at a folder made by uniaudio (config.json + model.safetensors) or a .pth file",
            )
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: codec format version {version}, this uniaudio reads version {FORMAT_VERSION}",
                "upgrade uniaudio, or re-export the checkpoint with this version",
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"{source}: unknown codec config fields {unknown}",
                "the checkpoint was written by another uniaudio version; use that version or re-export it",
            )
        vocab = data.pop("vocab", None)
        search = data.get("residual_search", "cosine")
        if search not in RESIDUAL_SEARCHES:
            raise CheckpointError(
                f"{source}: residual_search {search!r} is not one of {', '.join(RESIDUAL_SEARCHES)}",
                "fix config.json, or re-export the checkpoint with this uniaudio",
            )
        contrast = data.get("small_contrast", 1.0)
        if not valid_contrast(contrast):
            lo, hi = CONTRAST_RANGE
            raise CheckpointError(
                f"{source}: small_contrast {contrast!r} is not a number between {lo} and {hi}",
                "fix config.json (1.0 turns the post-filter off), or re-export the checkpoint",
            )
        smooth = data.get("small_contrast_smooth", 0)
        if not valid_contrast_smooth(smooth):
            raise CheckpointError(
                f"{source}: small_contrast_smooth {smooth!r} is not 0 or an odd width up to {MAX_CONTRAST_SMOOTH}",
                "fix config.json (0 raises the whole magnitude), or re-export the checkpoint",
            )
        hidden = data.get("codebook_map_hidden", 0)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 0:
            raise CheckpointError(
                f"{source}: codebook_map_hidden {hidden!r} is not a width (an integer >= 0)",
                "fix config.json (0 is the linear map), or re-export the checkpoint",
            )
        cfg = cls(**data)
        if vocab is not None:
            cfg.vocab = VocabSpec(**vocab)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> CodecConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: missing", "a codec checkpoint folder needs config.json") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})", "restore the file from the checkpoint") from e
        return cls.from_dict(data, source=str(path))
