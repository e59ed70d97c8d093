"""The report's "Looking inside the network" section: first-layer kernels, feature maps of a
few test images and Grad-CAM maps of the worst-classified ones.

It rebuilds the model from the run directory (config.yaml + model.safetensors) and runs it
on the saved example images only, so the section costs a fraction of a second whatever the
size of the test set; without weights it is skipped with a note."""

from __future__ import annotations

import numpy as np
import torch

from cnnlab import runs
from cnnlab.analysis.interpretability import (
    conv_layer_names, feature_maps, first_layer_kernels, grad_cam, grad_cam_caveat, kernel_images,
)
from cnnlab.analysis.run_files import RunFiles, lookup_images
from cnnlab.analysis.trained_run import TrainedModel, load_trained_model
from cnnlab.errors import CnnlabError
from cnnlab.report import image_plots
from cnnlab.report.document import Block, Callout, FigureWriter, Heading, Paragraph

# Grad-CAM runs on at most this many of the worst images, so the report stays quick.
MAX_GRAD_CAM_IMAGES = 10
FEATURE_MAP_IMAGES = 3
FEATURE_MAP_CHANNELS = 12


def network_section(run: RunFiles, figures: FigureWriter) -> list[Block]:
    """Blocks of the section; a note in place of what the run directory cannot support."""
    blocks: list[Block] = [Heading("Looking inside the network")]
    if not (run.run_dir / runs.WEIGHTS_FILE).is_file():
        return blocks + [Callout(f"No {runs.WEIGHTS_FILE} in the run directory (weights are saved when a run "
                                 "completes): kernels, feature maps and Grad-CAM are skipped.")]
    if run.examples is None or run.interpretation is None:
        return blocks + [Callout(f"No {runs.EXAMPLES_FILE} or {runs.PREDICTIONS_FILE}: nothing to look at.")]
    try:
        trained = load_trained_model(run.run_dir, input_shape=run.examples["images"].shape[1:])
    except CnnlabError as error:
        return blocks + [Callout(f"The model could not be rebuilt, so this section is skipped: {error}")]
    with torch.no_grad():
        kernels = first_layer_kernels(trained.module)
    if kernels is None:
        blocks.append(Paragraph("The first layer is not a convolution (e.g. a Dense layer of an MLP): "
                                "there are no kernels to show as pictures."))
    else:
        colour = "in colour (red, green, blue weights)" if kernels.shape[1] == 3 else "in grey"
        blocks.append(figures.add("kernels", lambda: image_plots.plot_kernel_grid(kernel_images(kernels)),
                                  f"The {len(kernels)} first-layer kernels ({kernels.shape[2]}x{kernels.shape[3]}) "
                                  f"{colour}, each scaled to its own range: light = large weight"))
    if not conv_layer_names(trained.module):
        return blocks + [Paragraph("The model has no convolutional layer: no feature maps or Grad-CAM.")]
    blocks += _feature_maps(run, trained, figures)
    return blocks + _grad_cam(run, trained, figures)


def _feature_maps(run: RunFiles, trained: TrainedModel, figures: FigureWriter) -> list[Block]:
    interpretation = run.interpretation
    wanted = np.arange(min(FEATURE_MAP_IMAGES, len(interpretation.labels)))
    images, found = lookup_images(run.examples, wanted)
    if not found.any():
        return []
    layer = conv_layer_names(trained.module)[0]
    maps = feature_maps(trained.module, trained.normalize(torch.from_numpy(images)), layer)
    maps = maps[:, :FEATURE_MAP_CHANNELS].numpy()
    captions = [f"#{index}: {interpretation.class_names[interpretation.labels[index]]}" for index in wanted[found]]
    caption = (f"What the first convolutional layer ({layer}) responds to: its first {maps.shape[1]} channels "
               "for the first test images (bright = strong response)")
    return [figures.add("feature_maps", lambda: image_plots.plot_feature_maps(images, maps, captions, layer), caption)]


def _grad_cam(run: RunFiles, trained: TrainedModel, figures: FigureWriter) -> list[Block]:
    interpretation = run.interpretation
    rows = interpretation.worst(MAX_GRAD_CAM_IMAGES)
    if not rows:
        return [Paragraph("No test image was misclassified: no Grad-CAM of errors to show.")]
    images, found = lookup_images(run.examples, np.array([row["index"] for row in rows], dtype=np.int64))
    rows = [row for row, present in zip(rows, found) if present]
    if not rows:
        return [Callout(f"The worst images are not in {runs.EXAMPLES_FILE}: no Grad-CAM.")]
    names = interpretation.class_names
    inputs = trained.normalize(torch.from_numpy(images))
    predicted = [names.index(row["predicted"]) for row in rows]
    true = [names.index(row["true"]) for row in rows]
    layer = conv_layer_names(trained.module)[-1]
    captions = [image_plots.example_caption(row) for row in rows]

    def figure():
        cams = [grad_cam(trained.module, inputs, predicted, layer), grad_cam(trained.module, inputs, true, layer)]
        return image_plots.plot_grad_cam(images, cams, ["for predicted", "for true class"], captions)

    caveat = grad_cam_caveat(trained.module, inputs, layer)
    intro = (f"Grad-CAM on the {len(rows)} worst-classified test images (layer {layer}): red marks the regions "
             "whose activations raised the score of the predicted (wrong) class, and, below, of the true class")
    reading = ("." if caveat else ". A map on the background or on a neighbouring object says the network looked "
               "in the wrong place; a map on the object says it looked right but read it wrongly.")
    blocks: list[Block] = [Paragraph(intro + reading)]
    if caveat:
        blocks.append(Callout(caveat, "warning"))
    return blocks + [figures.add("grad_cam", figure, "Columns: worst-classified images; rows: the image, Grad-CAM "
                                                     "for the predicted class, Grad-CAM for the true class")]
