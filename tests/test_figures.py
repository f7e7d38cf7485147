"""Figures: training curves keep one colour and label per mode in every panel."""

from matplotlib.colors import to_rgba

from dann.plots.figures import mode_colours, training_curves


def test_each_mode_keeps_its_colour_and_label_when_another_mode_lacks_a_panel(tmp_path):
    modes = ["source_only", "dann", "cdan"]  # source_only logs no domain_loss: dann must not take its colour there
    rows_by_mode = {
        mode: [
            {"step": step, "lr": 0.01, "label_loss": 1.0 / step, "target_acc": 0.5 + i / 10}
            | ({} if mode == "source_only" else {"domain_loss": 0.69 - i / 100})
            for step in (1, 2, 3)
        ]
        for i, mode in enumerate(modes)
    }
    lines = training_curves(rows_by_mode, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0

    colours = mode_colours(modes)
    assert len(set(colours.values())) == len(modes)
    assert set(lines) == {"lr", "label_loss", "domain_loss", "target_acc"}
    assert set(lines["domain_loss"]) == {"dann", "cdan"}
    for panel, by_mode in lines.items():
        for mode, line in by_mode.items():
            assert line.get_label() == mode, panel
            assert to_rgba(line.get_color()) == to_rgba(colours[mode]), (panel, mode)
            assert list(line.get_ydata()) == [row[panel] for row in rows_by_mode[mode]]

    fig = lines["lr"]["dann"].figure
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == modes
    assert [to_rgba(h.get_color()) for h in legend.legend_handles] == [to_rgba(colours[m]) for m in modes]
