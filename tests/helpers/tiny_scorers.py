"""Tiny random scorer models in their hub layouts, from transformers config classes.

- `make_clip_repo(dir)`: a `CLIPModel` folder like `openai/clip-vit-base-patch32` (config.json,
  model.safetensors, tokenizer files, preprocessor_config.json);
- `make_blip_repo(dir)`: a `BlipForQuestionAnswering` folder like `Salesforce/blip-vqa-capfilt-large`
  (a BERT WordPiece tokenizer with BLIP's [DEC] and [ENC] appended);
- `make_owl_repo(dir)`: an `Owlv2ForObjectDetection` folder like `google/owlv2-base-patch16-ensemble`.

Random weights: the scores mean nothing, but every scorer runs its whole real path offline, in
seconds on a CPU. From a checkout, for a trial of `ovi bench score` without the real models
(docs/benchmark.md, "Tiny scorer models for offline trials"):

    python -m tests.helpers.tiny_scorers DIR     # writes DIR/clip, DIR/blip, DIR/owl; prints the flags
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from tests.helpers.tiny_models import write_tiny_clip_tokenizer

IMAGE_SIZE = 32
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _clip_processor(size: int) -> dict:
    return {
        "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
        "size": {"shortest_edge": size},
    }


def _clip_towers(vocab: int, max_length: int) -> dict:
    """The tiny text and vision tower configs of the CLIP-shaped models (CLIP, OWLv2)."""
    return {
        "text_config": {"vocab_size": vocab, "hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "max_position_embeddings": max_length, "bos_token_id": vocab - 2,
                        "eos_token_id": vocab - 1, "pad_token_id": vocab - 1},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                          "image_size": IMAGE_SIZE, "patch_size": 8},
    }


def make_clip_repo(root: Path, seed: int = 0, projection_dim: int = 16) -> Path:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    write_tiny_clip_tokenizer(root, max_length=77)
    vocab = len(CLIPTokenizer.from_pretrained(root))
    cfg = CLIPConfig(**_clip_towers(vocab, max_length=77), projection_dim=projection_dim)
    CLIPModel(cfg).eval().save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps(_clip_processor(IMAGE_SIZE)))
    return root


BLIP_WORDS = ("yes no a an the of on and in is was to top side left right green blue red brown black white "
              "bench bowl cake horse vase cat dog car book giraffe lamp girl frog hat coat rack plastic toy glass "
              "bottle metallic desk fluffy sweater").split()


def write_blip_tokenizer(root: Path) -> None:
    """A WordPiece vocabulary: specials, some words, single characters and their ## pieces, [DEC], [ENC]."""
    from transformers import BertTokenizer

    chars = list(string.ascii_lowercase + string.digits + "?.,'-")
    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_WORDS, *chars,
                                *[f"##{c}" for c in chars], "[DEC]", "[ENC]"]))
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(root / "vocab.txt"), do_lower_case=True, model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tok.save_pretrained(root)


def make_blip_repo(root: Path, seed: int = 0) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering

    torch.manual_seed(seed)
    write_blip_tokenizer(root)
    tok = BertTokenizer.from_pretrained(root)
    vocab = len(tok)
    cfg = BlipConfig(
        text_config={"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 64, "encoder_hidden_size": 32,
                     "bos_token_id": tok.convert_tokens_to_ids("[DEC]"), "pad_token_id": 0,
                     "sep_token_id": tok.convert_tokens_to_ids("[SEP]"), "initializer_range": 0.3},
        vision_config={"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": IMAGE_SIZE, "patch_size": 8, "initializer_range": 0.3},
        initializer_range=0.3,
    )
    BlipForQuestionAnswering(cfg).eval().save_pretrained(root)
    proc = {"do_normalize": True, "do_resize": True, "do_rescale": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "image_processor_type": "BlipImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
            "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "processor_class": "BlipProcessor"}
    (root / "preprocessor_config.json").write_text(json.dumps(proc))
    return root


def make_owl_repo(root: Path, seed: int = 0) -> Path:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection

    torch.manual_seed(seed)
    write_tiny_clip_tokenizer(root, max_length=64)
    vocab = len(CLIPTokenizer.from_pretrained(root))
    # OWL compares class embeddings (text width) with query embeddings (projection)
    cfg = Owlv2Config(**_clip_towers(vocab, max_length=64), projection_dim=24)
    Owlv2ForObjectDetection(cfg).eval().save_pretrained(root)
    proc = {"do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD, "image_processor_type": "Owlv2ImageProcessor", "resample": 2,
            "rescale_factor": 1 / 255, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
            "processor_class": "Owlv2Processor"}
    (root / "preprocessor_config.json").write_text(json.dumps(proc))
    tc = json.loads((root / "tokenizer_config.json").read_text())
    tc["processor_class"] = "Owlv2Processor"
    (root / "tokenizer_config.json").write_text(json.dumps(tc))
    return root


def make_all(root: Path, seed: int = 0) -> dict[str, Path]:
    """The three tiny scorer models under `root` (`clip/`, `blip/`, `owl/`)."""
    return {"clip": make_clip_repo(root / "clip", seed), "blip": make_blip_repo(root / "blip", seed),
            "owl": make_owl_repo(root / "owl", seed)}


def score_flags(models: dict[str, Path]) -> list[str]:
    """The `ovi bench score` flags that use them."""
    return ["--clip-model", str(models["clip"]), "--blip-model", str(models["blip"]),
            "--detector-model", str(models["owl"]), "--option", "blip-vqa.image_size=0"]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex

    parser = argparse.ArgumentParser(prog="python -m tests.helpers.tiny_scorers",
                                     description="Write tiny random CLIP, BLIP-VQA and OWLv2 models in their hub "
                                     "layouts, for offline trials of `ovi bench score`.")
    parser.add_argument("dir", type=Path, help="folder to write clip/, blip/ and owl/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = make_all(args.dir.expanduser().absolute(), args.seed)
    print("ovi bench score RUN " + " ".join(shlex.quote(f) for f in score_flags(models)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
