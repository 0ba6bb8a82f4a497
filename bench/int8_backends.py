"""Which int8 path for --precision int8: torch.ao quantize_dynamic against torchao's
Int8DynamicActivationInt8WeightConfig against fp32, greedy decoding of the demo test set in one
process, plus the [5,256]x[256,8000] output projection alone. torchao is not a dependency:
install it beside (pip install --no-deps --target DIR torchao) and pass DIR.

    flock /tmp/tx-bench.lock .venv/bin/python bench/int8_backends.py runs/demo data/demo/test.src /tmp/torchao
"""
import sys, time, copy
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if len(sys.argv) > 3:
    sys.path.append(sys.argv[3])
import torch
torch.set_num_threads(2)
from txcli.commands.run import open_run, run_decoding
from txcli.engines.torch_engine import TorchEngine
from txcli.options import DecodeOptions
from txcli.translation import translate_lines
from txcli.quantize import int8_copy
run = open_run(sys.argv[1], 'cpu')
texts = open(sys.argv[2]).read().splitlines()[:200]
models = {'fp32': run.model, 'ao.quantize_dynamic': int8_copy(run.model)}
try:
    from torchao.quantization import quantize_, Int8DynamicActivationInt8WeightConfig
    m = copy.deepcopy(run.model).eval()
    m.out_proj.weight = torch.nn.Parameter(m.out_proj.weight.detach().clone())  # untie: torchao swaps the tensor
    quantize_(m, Int8DynamicActivationInt8WeightConfig())
    models['torchao Int8DynamicActivationInt8Weight'] = m
except Exception as e:
    print('torchao failed:', type(e).__name__, str(e)[:200])
d = run_decoding(run, DecodeOptions(beam=1))
engines = {name: TorchEngine(replace(run, model=model), d) for name, model in models.items()}  # tx translate's path
for rnd in range(2):
    for name, engine in engines.items():
        with torch.inference_mode():
            translate_lines(engine, texts[:10], 96)
            t = time.perf_counter(); translate_lines(engine, texts, 96); dt = time.perf_counter() - t
        print(f'round {rnd} {name:40s} greedy {len(texts)/dt:6.1f} sent/s')
x = torch.randn(5, 256); w = torch.nn.Linear(256, 8000)
q = int8_copy(torch.nn.Sequential(w))
for name, f in (('fp32', w), ('int8', q)):
    with torch.inference_mode():
        for _ in range(50): f(x)
        t = time.perf_counter()
        for _ in range(2000): f(x)
        print(f'[5,256]x[256,8000] {name}: {(time.perf_counter()-t)/2000*1e6:.0f} us')
