"""``python -m engines {build,trtexec,register,lint,triton} BUNDLE ...`` and ``python -m engines serve REPO``"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engines.precision import KEEP_FP32_MODES
from engines.profiles import PRECISIONS
from engines.trtexec import TARGETS
from engines.triton_repo import PIPELINE_QUEUE_TIMEOUT_MS, PLATFORMS, QUEUE_DEPTH, QUEUE_TIMEOUT_MS
from runtime.bundle import Bundle, BundleError
from runtime.backends.trt import LocalTarget, local_target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build engines here with the TensorRT Python API")
    build.add_argument("bundle", type=Path)
    build.add_argument("--precision", choices=PRECISIONS, default="fp16")
    build.add_argument("--components", nargs="+", help="default: every component")
    build.add_argument("--workspace", type=int, default=4096, metavar="MB", help="builder workspace (default 4096)")
    build.add_argument("--timing-cache", type=Path, metavar="FILE",
                       help="reused across builds (default: BUNDLE/timing-sm<cc>.cache)")
    build.add_argument("--keep-fp32", choices=KEEP_FP32_MODES, default="vae",
                       help="components whose normalisation/softmax stay FP32 (default: vae)")
    build.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")

    trtexec = commands.add_parser("trtexec", help="write a shell script of trtexec command lines for the target")
    trtexec.add_argument("bundle", type=Path)
    trtexec.add_argument("--precision", choices=PRECISIONS, default="fp16")
    trtexec.add_argument("--target", choices=sorted(TARGETS), default="jetson-orin")
    trtexec.add_argument("--components", nargs="+", help="default: every component")
    trtexec.add_argument("--workspace", type=int, metavar="MB", help="default: the target's")
    trtexec.add_argument("--keep-fp32", choices=KEEP_FP32_MODES, default="vae")
    trtexec.add_argument("--out", type=Path, help="default: BUNDLE/build_engines_<target>_<precision>.sh")

    register = commands.add_parser("register", help="record plan files built elsewhere in the manifest")
    register.add_argument("bundle", type=Path)
    register.add_argument("plans", nargs="+", type=Path, help="<component>.<precision>.plan files")
    register.add_argument("--tensorrt-version", help="default: the local TensorRT's")
    register.add_argument("--gpu", help="GPU name (default: the local GPU's)")
    register.add_argument("--compute-capability", help="e.g. 8.7 for Orin (default: the local GPU's)")

    triton = commands.add_parser("triton", help="write the bundle's models into a Triton model repository")
    triton.add_argument("bundle", type=Path)
    triton.add_argument("--out", type=Path, required=True, metavar="MODEL_REPO")
    triton.add_argument("--platform", choices=PLATFORMS, default="onnxruntime",
                        help="onnxruntime: the graphs; tensorrt: the bundle's plans; python: the graphs run by "
                             "ONNX Runtime in Python-backend models (default: onnxruntime)")
    triton.add_argument("--precision", choices=PRECISIONS, default="fp16", help="the plans of --platform tensorrt")
    triton.add_argument("--instances", type=int, default=1, help="model instances per device (default 1)")
    triton.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="how long the dynamic batcher waits to fill a batch (default 100)")
    triton.add_argument("--queue-depth", type=int, default=QUEUE_DEPTH,
                        help="waiting executions per instance before a request is refused as busy "
                             f"(0: unbounded; default {QUEUE_DEPTH})")
    triton.add_argument("--queue-timeout-ms", type=int, default=QUEUE_TIMEOUT_MS,
                        help=f"a component model's longest wait in the queue before refusal (0: none; default "
                             f"{QUEUE_TIMEOUT_MS})")
    triton.add_argument("--pipeline-queue-timeout-ms", type=int, default=PIPELINE_QUEUE_TIMEOUT_MS,
                        help=f"the same for the pipeline model (default {PIPELINE_QUEUE_TIMEOUT_MS})")

    serve = commands.add_parser("serve", help="run the tritonserver binary of nvidia-pytriton on a repository")
    serve.add_argument("repository", type=Path)
    serve.add_argument("--python", type=Path, default=Path(".venv-triton/bin/python"),
                       help="the Python environment with nvidia-pytriton (default: .venv-triton/bin/python)")
    serve.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1)")

    lint = commands.add_parser("lint", help="check every graph against TensorRT's ONNX parser support")
    lint.add_argument("bundle", type=Path)
    lint.add_argument("--components", nargs="+", help="default: every component")
    return parser


def _register_target(args: argparse.Namespace) -> LocalTarget:
    given = (args.tensorrt_version, args.gpu, args.compute_capability)
    if all(given):
        return LocalTarget(*given)
    local = local_target()
    if local is None:
        raise BundleError("register needs the TensorRT version and GPU the plans were built with: run it on the "
                          "target (with tensorrt and a GPU), or pass --tensorrt-version, --gpu and "
                          "--compute-capability")
    return LocalTarget(args.tensorrt_version or local.tensorrt, args.gpu or local.gpu,
                       args.compute_capability or local.compute_capability)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            from engines.build import build

            build(args.bundle, args.precision, components=args.components, workspace_mb=args.workspace,
                  timing_cache=args.timing_cache, keep_fp32=args.keep_fp32, verbose=args.verbose)
        elif args.command == "trtexec":
            from engines.trtexec import write_script

            path = write_script(Bundle(args.bundle), args.precision, out=args.out, target_name=args.target,
                                components=args.components, workspace_mb=args.workspace, keep_fp32=args.keep_fp32)
            print(f"wrote {path}; run it on the {args.target} target: bash {path.name}")
        elif args.command == "register":
            from engines.register import register

            for record in register(args.bundle, args.plans, _register_target(args), built_with="trtexec"):
                print(f"registered {record['file']}: {record['precision']}, TensorRT {record['tensorrt']}, "
                      f"{record['gpu']} (sm {record['compute_capability']})")
        elif args.command == "triton":
            from engines.triton_repo import write_repository

            names = write_repository(args.bundle, args.out, platform=args.platform, instances=args.instances,
                                     max_queue_delay_us=args.max_queue_delay_us, precision=args.precision,
                                     queue_depth=args.queue_depth, queue_timeout_ms=args.queue_timeout_ms,
                                     pipeline_queue_timeout_ms=args.pipeline_queue_timeout_ms)
            print(f"wrote {len(names)} models into {args.out}")
        elif args.command == "serve":
            from engines.triton_server import serve_forever

            serve_forever(args.repository, args.python, address=args.address)
        else:
            from engines.lint import lint_bundle

            report = lint_bundle(args.bundle, args.components)
            for graph, findings in report.items():
                print(f"{graph}: {'ok' if not findings else f'{len(findings)} problem(s)'}")
                for finding in findings:
                    print(f"  {finding}")
            return 1 if any(report.values()) else 0
    except (BundleError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
