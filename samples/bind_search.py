"""Cross-modal search with an exported ImageBind bundle: similarity table, zero-shot labels, retrieval.

    python samples/bind_search.py [--bundle bundles/imagebind-tiny] [--index outputs/bind_index.npy]

Embeds the images, sounds, depth and thermal maps under samples/assets/ and a few texts,
prints softmax(items x texts) as the official demo does, stores the image+sound
embeddings as an index (.npy + .json) and queries it with a text.
(The tiny bundle has random weights: the numbers show the plumbing, not meaning.)
"""
import argparse
from pathlib import Path

import numpy as np

import runtime
from runtime.arrays import softmax
from runtime.imagebind.pipeline import EmbeddingIndex

ASSETS = Path(__file__).parent / "assets"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="bundles/imagebind-tiny")
    parser.add_argument("--index", default="outputs/bind_index.npy")
    parser.add_argument("--query", default="waves on a beach")
    args = parser.parse_args(argv)

    texts = ["a sunny beach", "a bell chiming", "ocean waves", "a box on the floor", "a warm body"]
    inputs = {
        "vision": [str(ASSETS / "beach.png")],
        "audio": [str(ASSETS / "chime.wav"), str(ASSETS / "waves.wav")],
        "depth": [str(ASSETS / "depth.png")],
        "thermal": [str(ASSETS / "thermal.png")],
        "text": texts,
    }
    names = {"vision": ["beach.png"], "audio": ["chime.wav", "waves.wav"], "depth": ["depth.png"],
             "thermal": ["thermal.png"]}
    pipeline = runtime.EmbeddingPipeline(args.bundle)
    embeddings = pipeline.embed(inputs)

    print("softmax(item x text) per item, as the official demo prints it")
    print(f"{'':<14}" + "".join(f"{t[:14]:>16}" for t in texts))
    for modality, items in names.items():
        probabilities = softmax(runtime.similarity(embeddings[modality], embeddings["text"]))
        for name, row in zip(items, probabilities):
            print(f"{name:<14}" + "".join(f"{p:>16.3f}" for p in row))

    index = EmbeddingIndex(np.concatenate([embeddings["vision"], embeddings["audio"]]),
                           names["vision"] + names["audio"], modality="vision+audio",
                           info={"bundle": str(args.bundle)})
    path = index.save(args.index)
    query = pipeline.embed_modality("text", [args.query])
    print(f"\nindex {path} (+ .json); top matches for {args.query!r}:")
    for rank, (item, score) in enumerate(EmbeddingIndex.load(path).search(query, k=3)[0], 1):
        print(f"  {rank}. {item:<12} score {score:8.3f}")


if __name__ == "__main__":
    main()
