"""The command line of ``run_recbole_invrl.py``, ``python -m recbole_invrl`` and ``recbole-invrl``:
run a recbole_invrl model or any RecBole model with RecBole's command-line habits.

    recbole-invrl --model=InvRL --dataset=kwai [--config_files="a.yaml b.yaml"]
        [--key=value ...] [--result_json=PATH]
        [--nproc=N [--world_size=W --ip=HOST --port=P --group_offset=K]]

``--nproc=2`` trains with 2 processes through RecBole's distributed path (DDP; gloo on CPU).
The caller sizes the thread team first (``recbole_invrl.threads.configure_threads``).
"""
import argparse
import os
import signal
import sys

from recbole_invrl.data import MissingDatasetError
from recbole_invrl.compat import CheckpointError, write_json_atomic
from recbole_invrl.quick_start import run


class Terminated(BaseException):
    """SIGTERM, raised where the run is, so that it unwinds as Ctrl-C does."""


def _terminate(signum, frame) -> None:
    raise Terminated()


INTERRUPTED = ("interrupted ({signal}): the stage in progress left no files; an InvRL run's completed stages "
               "are kept in its state file, and the same command with --resume=True continues from them")


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2: a setting or the dataset is wrong;
    130 / 143: interrupted by SIGINT / SIGTERM)."""
    from recbole_invrl.data.dataset import FeatureFileError
    from recbole_invrl.model.content import ContentConfigError
    from recbole_invrl.settings import SettingsError

    argv = sys.argv[1:] if argv is None else list(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job ignores it
    try:
        return _main(argv)
    except (SettingsError, MissingDatasetError, FeatureFileError, ContentConfigError, CheckpointError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except KeyboardInterrupt:
        print(INTERRUPTED.format(signal="SIGINT"), file=sys.stderr)
        return 130
    except Terminated:
        print(INTERRUPTED.format(signal="SIGTERM"), file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _main(argv: list[str]) -> int:
    from logging import getLogger

    from recbole_invrl.quick_start import load_config
    from recbole_invrl.settings import (SettingsError, check_command_line_keys, check_output_path,
                                        check_script_options)

    wants_help = any(a in ("-h", "--help") for a in argv)
    parser = build_parser(dataset_settings(argv) if wants_help else None)
    args, extra = parser.parse_known_args(argv)  # other --key=value pairs are read by Config
    check_script_options(args.nproc, args.world_size, args.group_offset)
    if args.result_json is not None:
        check_output_path("result_json", args.result_json)
    overrides = override_keys(extra)
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    for file in config_files or []:
        if not os.path.isfile(file):
            raise SettingsError(f"config_files: expected existing yaml files, got {file!r} (no such file)")
    saved_argv, sys.argv = sys.argv, [sys.argv[0], *argv]  # RecBole's Config reads sys.argv
    try:
        check_command_line_keys(overrides, load_config(args.model, args.dataset, config_files))
        result = run(args.model, args.dataset, config_file_list=config_files, nproc=args.nproc,
                     world_size=args.world_size, ip=args.ip, port=args.port,
                     group_offset=args.group_offset)
    finally:
        sys.argv = saved_argv
    if args.result_json and result is not None:
        write_json_atomic(result, args.result_json)
        getLogger().info(f"  {'result_json':<12}{args.result_json}")
    return 0


def override_keys(extra: list[str]) -> list[str]:
    """The keys of the ``--key=value`` overrides; anything else is refused."""
    from recbole_invrl.settings import SettingsError

    keys = []
    for arg in extra:
        if not (arg.startswith("--") and "=" in arg and len(arg.split("=", 1)[0]) > 2):
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg
            raise SettingsError(f"{name}: expected an override of the form --key=value (e.g. --epochs=5), "
                                f"got {arg!r}")
        keys.append(arg[2:].split("=", 1)[0])
    return keys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (exit 2) instead of the usage and the message
        from recbole_invrl.settings import SettingsError

        raise SettingsError(message)


DESCRIPTION = "Run a recbole_invrl model or any RecBole model with RecBole's command-line habits."


def dataset_settings(argv: list[str]) -> tuple[str, dict] | None:
    """``(dataset, settings)`` for ``--help --dataset=D``: the values a run on D starts from (model
    yamls, then the dataset's yamls, as read); None without ``--dataset`` or if they cannot be read."""
    from recbole_invrl.config import Config

    given = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if "dataset" not in given:
        return None
    try:
        config = Config(given.get("model", "UltraGCNMM"), given["dataset"])
    except Exception:  # noqa: BLE001 - help falls back to the model defaults
        return None
    # the layers as read (final_config_dict holds some keys as RecBole rewrites them)
    layers = {**config.internal_config_dict, **config.external_config_dict, "model": config["model"]}
    return given["dataset"], layers


def build_parser(dataset_defaults: tuple[str, dict] | None = None) -> argparse.ArgumentParser:
    usage = ("%(prog)s [--model=NAME] [--dataset=NAME] [--config_files=\"a.yaml b.yaml\"] [--key=value ...]\n"
             "       [--result_json=PATH] [--nproc=N [--world_size=W --ip=HOST --port=P --group_offset=K]]")
    parser = _Parser(usage=usage, description=DESCRIPTION, epilog=help_epilog(dataset_defaults), allow_abbrev=False,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", default="UltraGCNMM", help="model name (see models below)")
    parser.add_argument("--dataset", "-d", default="ml-100k-mm", help="dataset name")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    parser.add_argument("--result_json", default=None, help="also write the results here")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine")
    parser.add_argument("--world_size", type=int, default=-1, help="processes in all (default: nproc)")
    parser.add_argument("--ip", default="localhost", help="address of the rank-0 machine")
    parser.add_argument("--port", default="5678", help="port of the rank-0 machine")
    parser.add_argument("--group_offset", type=int, default=0, help="rank of this machine's first process")
    return parser


def help_epilog(dataset_defaults: tuple[str, dict] | None = None) -> str:
    import textwrap

    from recbole_invrl.settings import recbole_model_names, settings_help
    from recbole_invrl.utils import plugin_model_names

    dataset, effective = dataset_defaults or ("", None)
    dataset_note = (f"; with --dataset={dataset}, the values its yamls set, the model's default after them"
                    if dataset_defaults else "")
    recbole_models = textwrap.fill(", ".join(recbole_model_names()), width=96, initial_indent="    ",
                                   subsequent_indent="    ")
    return f"""settings:
  Every other --key=value overrides a config key, above config files and dataset yamls, e.g.
    --epochs=5 --learning_rate=0.0005 --topk=[10,20] --metrics="['Recall','NDCG']" --use_gpu=False
  Values are Python literals (5, 0.5, True, [10, 20], None); anything else is text. Bad values
  stop the run before any data loads (exit status 2).

models:
  recbole_invrl: {', '.join(plugin_model_names())} (UltraGCNMM also as UltraGCN-MM)
  RecBole:
{recbole_models}

recbole_invrl keys, with defaults [and accepted values]{dataset_note} (RecBole's own keys:
https://recbole.io/docs/user_guide/config_settings.html):
{settings_help(effective, dataset)}
"""


