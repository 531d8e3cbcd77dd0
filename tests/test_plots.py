"""Tests for vqlib.plots: shapes it accepts, what it draws, and the errors it raises."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vqlib import plots, summarize  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _history(quantizer=True, n=4):
    return [{"step": 10 * (i + 1), "loss": 5.0 - i, "reconstruction": 4.0 - i, "latent": 1.0,
             "perplexity": float(i + 1) if quantizer else None, "codes_used": i + 2 if quantizer else None}
            for i in range(n)]


def test_loss_curves_one_panel_per_column_and_overlay():
    fig = plots.loss_curves(_history())
    assert len(fig.axes) == 3
    assert list(fig.axes[0].lines[0].get_xdata()) == [10, 20, 30, 40]
    plots.loss_curves(pd.DataFrame(_history()), axes=fig.axes, label="second run")
    assert len(fig.axes[0].lines) == 2


def test_loss_curves_log_axes_only_for_positive_columns():
    history = _history()
    history[0]["latent"] = 0.0
    fig = plots.loss_curves(history, logy=True)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "linear"]
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels(minor=True) if t.get_text()]
    assert labels and all("10^" not in t and "e+" not in t for t in labels)  # plain numbers


def test_loss_curves_rejects_unknown_column_and_empty_history():
    with pytest.raises(ValueError, match="no \\['kl'\\]"):
        plots.loss_curves(_history(), columns=("loss", "kl"))
    with pytest.raises(ValueError, match="step"):
        plots.loss_curves([])


def test_codebook_usage_for_quantizers_only():
    assert plots.has_codebook_usage(_history())
    assert not plots.has_codebook_usage(_history(quantizer=False))
    fig = plots.codebook_usage(_history(), num_codes=8)
    assert len(fig.axes) == 2
    assert list(fig.axes[1].lines[0].get_ydata()) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="quantizers"):
        plots.codebook_usage(_history(quantizer=False))


def test_codebook_usage_overlays_keep_autoscaling_from_zero():
    fig = plots.codebook_usage(_history(), label="small")
    big = [dict(row, perplexity=10 * row["perplexity"], codes_used=100 + row["codes_used"]) for row in _history()]
    plots.codebook_usage(big, axes=fig.axes, label="big")
    for ax, top in zip(fig.axes, (40.0, 105)):
        bottom, upper = ax.get_ylim()
        assert bottom == 0 and upper >= top
    fig = plots.codebook_usage(_history(), num_codes=128)
    assert fig.axes[1].get_ylim()[1] >= 128  # the K line is inside the view


@pytest.mark.parametrize("shape, expected", [((5, 784), (5, 28, 28)), ((5, 64), (5, 8, 8)),
                                             ((5, 3, 32, 32), (5, 32, 32, 3)), ((5, 1, 28, 28), (5, 28, 28))])
def test_as_images_shapes(shape, expected):
    assert plots.as_images(torch.rand(shape)).shape == expected


def test_as_images_keeps_values_and_rejects_unknown_shapes():
    x = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(plots.as_images(x)[1], [[4, 5], [6, 7]])
    assert plots.as_images(np.zeros((2, 6)), image_shape=(2, 3)).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="image_shape"):
        plots.as_images(np.zeros((2, 10)))


def test_reconstruction_grid_two_rows():
    fig = plots.reconstruction_grid(torch.rand(12, 784), torch.rand(12, 784), n=5)
    assert len(fig.axes) == 10
    assert fig.axes[0].get_ylabel() == "original" and fig.axes[5].get_ylabel() == "reconstruction"
    fig = plots.reconstruction_grid(torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32))
    assert fig.axes[0].images[0].get_array().shape == (32, 32, 3)
    with pytest.raises(ValueError, match="originals"):
        plots.reconstruction_grid(torch.rand(3, 64), torch.rand(2, 64))


def test_mean_std_from_summarize():
    rows = [{"setting": s, "seed": k, "clustering_acc": a + k, "nmi": 0.1 * a}
            for s, a in (("paper", 1.0), ("published", 2.0)) for k in (0, 1)]
    summary = summarize(rows, by=("setting",), metrics=("clustering_acc", "nmi"))
    fig = plots.mean_std(summary, "setting", ["clustering_acc", "nmi"], reference="paper")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["paper", "published"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.5, 2.5])
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(1.5)  # the reference line
    with pytest.raises(ValueError, match="acc_mean"):
        plots.mean_std(summary, "setting", ["acc"])


def _runs():
    return pd.DataFrame([{"L": L, "free_bits": fb, "seed": s, "rate": 10.0 * L + s + 100 * fb, "gap": float(L)}
                         for fb in (0.0, 0.25) for L in (0, 2, 8) for s in (0, 1)])


def test_seed_dots_a_dot_per_seed_and_a_line_through_the_means_per_group():
    fig = plots.seed_dots(_runs(), "L", ["rate", "gap"], by="free_bits", titles={"rate": "KL"})
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_title() == "KL" and fig.axes[1].get_title() == "gap"
    dots, means = ax.lines[0], ax.lines[1]  # group free_bits 0: 6 dots, then its 3 means
    assert len(dots.get_xdata()) == 6
    np.testing.assert_allclose(means.get_ydata(), [0.5, 20.5, 80.5])
    np.testing.assert_allclose(ax.lines[3].get_ydata(), [25.5, 45.5, 105.5])  # free_bits 0.25
    assert np.all(np.asarray(dots.get_xdata()) < np.asarray(ax.lines[2].get_xdata()))  # dodged apart
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2", "8"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["free_bits 0", "free_bits 0.25"]


def test_seed_dots_categories_in_the_given_order_and_a_log_axis():
    frame = pd.DataFrame({"model": ["em_vq", "vq", "vq", "em_vq"], "H": [2.0, 1.0, 3.0, 4.0]})
    ax = plots.seed_dots(frame, "model", ["H"], order=["vq", "em_vq"]).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["vq", "em_vq"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1, 0, 0, 1])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [2.0, 3.0])  # the means, in the given order
    frame = pd.DataFrame({"K": [16, 16, 256, 256], "perplexity": [5.0, 7.0, 50.0, 70.0], "model": ["vq"] * 4})
    ax = plots.seed_dots(frame, "K", ["perplexity"], by="model", logx=True).axes[0]
    assert ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [16, 16, 256, 256])  # one group: no dodge
    with pytest.raises(ValueError, match="swap"):
        plots.seed_dots(frame, "K", ["swap"])


def test_scores_over_training_draws_the_seed_mean_and_range_per_setting_on_a_log_axis():
    import pandas as pd

    frame = pd.DataFrame([{"arm": arm, "seed": s, "step": t, "clustering_acc": base + 0.01 * s + 0.001 * t,
                           "nmi": base} for arm, base in (("a", 0.2), ("b", 0.5)) for s in range(3)
                          for t in (250, 500, 1000)])
    fig = plots.scores_over_training(frame, "arm", dashed=["b"])
    acc = fig.axes[0]
    assert acc.get_xscale() == "log" and len(acc.lines) == 2
    a_line, b_line = acc.lines
    np.testing.assert_allclose(a_line.get_ydata(), [0.2 + 0.01 + 0.001 * t for t in (250, 500, 1000)])
    assert a_line.get_linestyle() == "-" and b_line.get_linestyle() == "--"
    band = acc.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.2 + 0.25) and band.max() == pytest.approx(0.2 + 0.02 + 1.0)
