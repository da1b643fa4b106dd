"""The offload measurement script (--quick, CPU) and its report generator; streaming keeps outputs exact."""
import numpy as np
import pandas as pd
import pytest

from tests.report_scripts import load_report_script

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def measure():
    return load_report_script("offload", "measure_offload")


def test_streaming_weights_and_kv_gives_the_same_logits(measure):
    from validate import models

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, _ = measure.build(True, cpu)
    layers = list(model.model.layers)
    cache = models.random_cache(model, 2, 16, cpu)
    ids = torch.randint(0, model.config.vocab_size, (2, 1))
    with torch.inference_mode():
        def logits():
            out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            models.crop(cache, 16)
            return out.float()

        reference = logits()
        slots = measure.WeightSlots(layers[1:], cpu, False)
        # the streamed layers' parameters now live in two shared buffers the streamer fills before each layer
        streamer = measure.Streamer(layers[1:], slots.host, slots.targets, False, False)
        torch.testing.assert_close(logits(), reference)
        streamer.remove()
        slots.restore()
        torch.testing.assert_close(logits(), reference)
        host = [[measure._host(t, False) for t in measure.kv_tensors(cache, i)] for i in range(len(layers))]
        for i in range(len(layers)):                      # spoil the device cache: the copies must restore it
            for t in measure.kv_tensors(cache, i):
                t.zero_()
        kv = measure.Streamer(layers, host, lambda k: [t[..., :16, :] for t in measure.kv_tensors(cache, k)],
                              False, False)
        torch.testing.assert_close(logits(), reference)
        kv.remove()


def test_quick_run_and_report(measure, tmp_path):
    run = tmp_path / "run"
    assert measure.main([str(run), "--quick"]) == 0
    data = pd.read_csv(run / "offload.csv")
    assert set(data.kind) == {"copy", "weights", "kv", "kv_base"}
    for column in ("batch", "kv_len", "resident_layers", "resident_fraction", "overlap", "bytes_per_step", "time_s"):
        assert column in data
    weights = data[data.kind == "weights"]
    assert set(weights.resident_fraction) == {0.0, 0.5, 1.0} and set(weights.overlap) == {0, 1}
    assert (data.time_s > 0).all()
    report = load_report_script("offload", "make_report")
    assert report.main([str(run), "--hardware", "h200-sxm"]) == 0
    predicted = pd.read_csv(run / "offload_predicted.csv")
    assert (predicted.pred_datasheet_s > 0).all() and np.isfinite(predicted.pred_spec_s).all()
    text = (run / "report.md").read_text()
    # a busy CPU may time the two small copies out of order: the link fit is then skipped, and said so
    assert ("Headline (link-calibrated)" in text) or ("Link calibration skipped" in text)
    assert "| weights |" in text
    assert (run / "offload.png").stat().st_size > 0


def test_link_fit_recovers_bandwidth_and_latency():
    report = load_report_script("offload", "make_report")
    sizes = np.array([1e6, 1e7, 1e8, 4e8])
    copies = pd.DataFrame({"bytes_per_step": sizes, "time_s": 12e-6 + sizes / 50e9})
    bw, lat = report.fit_link(copies)
    assert bw == pytest.approx(50e9, rel=1e-6) and lat == pytest.approx(12e-6, rel=1e-4)
    backwards = pd.DataFrame({"bytes_per_step": [1e6, 1e7], "time_s": [2e-3, 1e-3]})
    assert report.fit_link(backwards) is None
