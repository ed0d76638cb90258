"""Writes the drafts of ``example_workflows/*.json`` from compact graph descriptions.

    python tests/integration/build_example_workflows.py http://127.0.0.1:PORT [OUT_DIR [NAME...]]

Node definitions (widget order, defaults) come from the running server's ``/object_info``, so the
drafts match what that ComfyUI expects. ``tests/integration/refresh_examples.py`` runs the
whole refresh: a server with stand-in model files under the examples' names, these drafts, then
``browser.py canonicalize`` (the editor's own serialisation, a layout without overlapping title bars,
and the ``.jpg`` thumbnails).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_format import build_ui_workflow  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Model files each example expects (docs/nodes.md says where each comes from).
LANDSCAPE = "landscape.pt"
FFHQ = "ffhq.pkl"  # NVlabs stylegan2-ada-pytorch FFHQ 1024 (python -m sgim_nodes download ffhq)
WIKIART = "wikiart-1024-stylegan3-t-17.2Mimg.pkl"  # NVlabs StyleGAN3-T WikiArt 1024 (see docs/nodes.md)
ENCODER = "resnet18_57.pth"
CLIP = "ViT-B-32.pt"
IDENTITY = "model_ir_se50.pth"
VGG = "vgg16-397923af.pth"  # torchvision's VGG16, for the LPIPS distance (python -m sgim_nodes download vgg16)
PAINTING = "my_painting.png"  # the user's picture (Load Image's upload button)

X = [0, 380, 760, 1140, 1520]  # column positions

FIRST_TRY = ("First try? This graph runs 1000 projection + 350 tuning + 200 edit steps: 20-35 min on a CPU. "
             "For a quick look, lower Project Image's steps to 200 and tune_steps to 100, and Optimize Latent's "
             "steps to 60 (a few minutes); raise them again for the final picture.")
LOADER_FOLDERS = {"SGIMLoadStyleGAN": "stylegan", "SGIMLoadCLIP": "sgim_clip", "SGIMLoadAudioEncoder": "sgim_audio_encoders",
                  "SGIMLoadIdentityModel": "sgim_identity", "SGIMLoadVGG": "sgim_vgg"}
# IR-SE50 has no direct address; its distributors' page instead
MODEL_PAGES = {"model_ir_se50.pth": "https://github.com/eladrich/pixel2style2pixel#pretrained-models"}


def declare_models(workflow: dict) -> None:
    """properties.models on every loader ([{name, url, directory}], what newer frontends read to list
    a missing file): the widget's file, the publisher's address from the download index, our folder key."""
    sys.path.insert(0, str(REPO))
    from sgim_nodes.models import KNOWN_MODELS

    index = {(m.folder, m.filename): m for m in KNOWN_MODELS.values()}
    for node in workflow["nodes"]:
        if node["type"] in LOADER_FOLDERS:
            folder, name = LOADER_FOLDERS[node["type"]], node["widgets_values"][0]
            url = index[(folder, name)].url or MODEL_PAGES[name]
            node["properties"]["models"] = [{"name": name, "url": url, "directory": folder}]


def common_models(generator: str, y0: int = 0) -> tuple[list[dict], list[tuple]]:
    nodes = [
        {"id": 1, "type": "SGIMLoadStyleGAN", "pos": [X[0], y0], "widgets": {"generator_name": generator}},
        {"id": 2, "type": "SGIMLoadCLIP", "pos": [X[0], y0 + 110], "widgets": {"clip_name": CLIP}},
    ]
    return nodes, []


def sound_target(audio_file: str, y: int, node_ids=(3, 4, 5)) -> tuple[list[dict], list[tuple]]:
    load_audio, encoder, embed = node_ids
    nodes = [
        {"id": encoder, "type": "SGIMLoadAudioEncoder", "pos": [X[0], y], "widgets": {"encoder_name": ENCODER}},
        {"id": load_audio, "type": "LoadAudio", "pos": [X[0], y + 110], "size": [320, 140],
         "widgets": {"audio": audio_file}},
        {"id": embed, "type": "SGIMEmbedAudio", "pos": [X[1], y]},
    ]
    links = [(encoder, "audio_encoder", embed, "audio_encoder"), (load_audio, "AUDIO", embed, "audio")]
    return nodes, links


def edit_graph(generator: str, audio_file: str, optimize: dict, source: dict, mask: str = "all",
               with_identity: bool = False, save_prefix: str = "sgim/edit") -> tuple[list[dict], list[tuple]]:
    nodes, links = common_models(generator)
    n, l = sound_target(audio_file, 240)
    nodes += n
    links += l
    nodes += [
        {"id": 6, "type": "SGIMSourceLatent", "pos": [X[1], 0], "widgets": source},
        {"id": 7, "type": "SGIMLayerMask", "pos": [X[1], 470], "size": [340, 260], "widgets": {"preset": mask}},
        {"id": 8, "type": "SGIMOptimizeLatent", "pos": [X[2], 0], "size": [340, 440], "widgets": optimize},
        {"id": 9, "type": "SGIMStyleGANDecode", "pos": [X[3], 0], "title": "Decode edited"},
        {"id": 10, "type": "SaveImage", "pos": [X[4], 0], "size": [300, 320], "widgets": {"filename_prefix": save_prefix}},
        {"id": 11, "type": "SGIMStyleGANDecode", "pos": [X[3], 320], "title": "Decode source"},
        {"id": 12, "type": "PreviewImage", "pos": [X[4], 360], "size": [300, 300], "title": "Source image"},
    ]
    links += [
        (1, "generator", 6, "generator"), (1, "generator", 7, "generator"), (1, "generator", 8, "generator"),
        (2, "clip", 8, "clip"), (5, "embedding", 8, "target"), (6, "wplus", 8, "source"),
        (7, "layer_mask", 8, "layer_mask"), (1, "generator", 9, "generator"), (8, "wplus", 9, "wplus"),
        (9, "image", 10, "images"), (1, "generator", 11, "generator"), (6, "wplus", 11, "wplus"),
        (11, "image", 12, "images"),
    ]
    if with_identity:
        nodes.append({"id": 13, "type": "SGIMLoadIdentityModel", "pos": [X[0], 600],
                      "widgets": {"identity_name": IDENTITY}})
        links.append((13, "identity_model", 8, "identity_model"))
    return nodes, links


def landscape_sound_edit():
    return edit_graph(LANDSCAPE, "thunderstorm.wav",
                      {"steps": 300, "lr": 0.1, "lambda_sim": 0.002, "lambda_id": 0.0},
                      {"seed": 7, "truncation_psi": 0.7}, save_prefix="sgim/landscape_thunderstorm")


def face_identity_edit():
    return edit_graph(FFHQ, "giggling.wav",
                      {"steps": 300, "lr": 0.05, "lambda_sim": 0.008, "lambda_id": 0.005},
                      {"seed": 3, "truncation_psi": 0.7}, mask="all", with_identity=True,
                      save_prefix="sgim/face_giggling")


def music_to_painting():
    return edit_graph(WIKIART, "music.wav",
                      {"steps": 200, "lr": 0.1, "lambda_sim": 0.002, "lambda_id": 0.0},
                      {"seed": 11, "truncation_psi": 0.7}, mask="all", save_prefix="sgim/painting")


def sound_text_style_mix():
    nodes, links = common_models(LANDSCAPE)
    n, l = sound_target("raining.wav", 240)
    nodes += n
    links += l
    opt = {"steps": 300, "lr": 0.1, "lambda_sim": 0.002, "lambda_id": 0.0}
    nodes += [
        {"id": 6, "type": "SGIMSourceLatent", "pos": [X[1], 0], "widgets": {"seed": 5, "truncation_psi": 0.7}},
        {"id": 7, "type": "SGIMEmbedText", "pos": [X[1], 470], "size": [340, 150],
         "widgets": {"text": "a landscape at night with a full moon"}},
        {"id": 8, "type": "SGIMOptimizeLatent", "pos": [X[2], 0], "size": [340, 440], "title": "Optimize (sound)",
         "widgets": opt},
        # below the room the upper optimiser's preview takes after a run (a square as wide as the node)
        {"id": 9, "type": "SGIMOptimizeLatent", "pos": [X[2], 440 + 340 + 54], "size": [340, 440],
         "title": "Optimize (text)", "widgets": opt},
        {"id": 10, "type": "SGIMStyleMix", "pos": [X[3], 0], "size": [320, 170],
         "widgets": {"layers_from_b": "fine"}},
        {"id": 11, "type": "SGIMStyleGANDecode", "pos": [X[3], 280]},
        {"id": 12, "type": "SaveImage", "pos": [X[4], 0], "size": [300, 320],
         "widgets": {"filename_prefix": "sgim/sound_text_mix"}},
        {"id": 13, "type": "SGIMSaveWPlus", "pos": [X[4], 380], "widgets": {"filename_prefix": "sgim/sound_text_mix"}},
    ]
    links += [
        (1, "generator", 6, "generator"), (1, "generator", 8, "generator"), (1, "generator", 9, "generator"),
        (2, "clip", 8, "clip"), (2, "clip", 9, "clip"), (2, "clip", 7, "clip"),
        (5, "embedding", 8, "target"), (7, "embedding", 9, "target"),
        (6, "wplus", 8, "source"), (6, "wplus", 9, "source"),
        # A = the text edit (its coarse and middle layers: layout), B = the sound edit (fine layers: colour, texture)
        (9, "wplus", 10, "wplus_a"), (8, "wplus", 10, "wplus_b"),
        (1, "generator", 11, "generator"), (10, "wplus", 11, "wplus"), (11, "image", 12, "images"),
        (10, "wplus", 13, "wplus"),
    ]
    return nodes, links


def chain_upscale_save():
    nodes, links = common_models(LANDSCAPE)
    n, l = sound_target("fire.wav", 240)
    nodes += n
    links += l
    nodes += [
        {"id": 6, "type": "SGIMSourceLatent", "pos": [X[1], 0], "widgets": {"seed": 21, "truncation_psi": 0.7}},
        {"id": 8, "type": "SGIMOptimizeLatent", "pos": [X[2], 0], "size": [340, 440],
         "widgets": {"steps": 300, "lr": 0.1, "lambda_sim": 0.002, "lambda_id": 0.0}},
        {"id": 9, "type": "SGIMStyleGANDecode", "pos": [X[3], 0]},
        {"id": 10, "type": "ImageScaleBy", "pos": [X[3], 160], "widgets": {"upscale_method": "lanczos", "scale_by": 2.0}},
        {"id": 11, "type": "SaveImage", "pos": [X[4], 0], "size": [300, 320], "widgets": {"filename_prefix": "sgim/upscaled"}},
        {"id": 12, "type": "SGIMSaveWPlus", "pos": [X[4], 380], "widgets": {"filename_prefix": "sgim/upscaled"}},
    ]
    links += [
        (1, "generator", 6, "generator"), (1, "generator", 8, "generator"), (2, "clip", 8, "clip"),
        (5, "embedding", 8, "target"), (6, "wplus", 8, "source"), (1, "generator", 9, "generator"),
        (8, "wplus", 9, "wplus"), (9, "image", 10, "image"), (10, "IMAGE", 11, "images"), (8, "wplus", 12, "wplus"),
    ]
    return nodes, links


def music_video():
    """A track -> a painting that follows it -> an .mp4 with the track, rendered straight to the file (Render
    Music Video: one batch of frames in memory at a time) and handed to core Save Video as a VIDEO; the
    tempo and beats shown beside the features."""
    nodes, links = common_models(WIKIART)
    nodes += [
        {"id": 3, "type": "LoadAudio", "pos": [X[0], 350], "size": [320, 140], "widgets": {"audio": "music.wav"}},
        {"id": 4, "type": "SGIMLoadAudioEncoder", "pos": [X[0], 240], "widgets": {"encoder_name": ENCODER}},
        {"id": 5, "type": "SGIMAudioFeatures", "pos": [X[1], 240], "size": [340, 330], "widgets": {"fps": 24.0}},
        {"id": 6, "type": "SGIMSourceLatent", "pos": [X[1], 0], "widgets": {"seed": 11, "truncation_psi": 0.7}},
        {"id": 7, "type": "SGIMMusicKeyframes", "pos": [X[2], 0], "size": [340, 560]},
        {"id": 8, "type": "SGIMMusicTrajectory", "pos": [X[3], 0], "size": [320, 260]},
        {"id": 9, "type": "SGIMRenderMusicVideo", "pos": [X[3], 300], "size": [320, 420],
         "widgets": {"filename_prefix": "sgim/music_video_render"}},
        {"id": 11, "type": "SaveVideo", "pos": [X[4], 0], "size": [320, 380],
         "widgets": {"filename_prefix": "sgim/music_video"}},
        {"id": 12, "type": "PreviewImage", "pos": [X[1], 620], "size": [340, 300], "title": "Audio features"},
        {"id": 13, "type": "SGIMTempoBeats", "pos": [X[4], 440], "size": [320, 130]},
        {"id": 14, "type": "PreviewImage", "pos": [X[4], 620], "size": [320, 300], "title": "Tempo and beats"},
    ]
    links += [
        (3, "AUDIO", 5, "audio"), (1, "generator", 6, "generator"),
        (1, "generator", 7, "generator"), (2, "clip", 7, "clip"), (4, "audio_encoder", 7, "audio_encoder"),
        (5, "features", 7, "features"), (6, "wplus", 7, "source"), (7, "keyframes", 8, "keyframes"),
        (1, "generator", 9, "generator"), (8, "wplus", 9, "wplus"),
        (9, "video", 11, "video"), (5, "plot", 12, "images"), (5, "features", 13, "features"),
        (13, "plot", 14, "images"),
    ]
    return nodes, links


def edit_my_painting():
    """Bring your own picture: Load Image -> Project Image (+ pivotal tuning) -> sound edit -> Save."""
    nodes, links = common_models(WIKIART)
    n, l = sound_target("raining.wav", 240)
    nodes += n
    links += l
    nodes += [
        {"id": 6, "type": "LoadImage", "pos": [X[0], 540], "size": [320, 320], "widgets": {"image": PAINTING}},
        {"id": 7, "type": "SGIMLoadVGG", "pos": [X[0], 900], "widgets": {"vgg_name": VGG}},
        {"id": 8, "type": "SGIMProjectImage", "pos": [X[1], 470], "size": [340, 420],
         "widgets": {"distance": "lpips", "steps": 1000, "tune_steps": 350, "fit": "crop", "init_seed": 0}},
        {"id": 9, "type": "SGIMOptimizeLatent", "pos": [X[2], 0], "size": [340, 440],
         "widgets": {"steps": 200, "lr": 0.1, "lambda_sim": 0.002, "lambda_id": 0.0}},
        {"id": 10, "type": "SGIMStyleGANDecode", "pos": [X[3], 0], "title": "Decode edited"},
        {"id": 11, "type": "SaveImage", "pos": [X[4], 0], "size": [300, 320],
         "widgets": {"filename_prefix": "sgim/my_painting_raining"}},
        {"id": 12, "type": "PreviewImage", "pos": [X[3], 360], "size": [300, 300], "title": "Projection (before the edit)"},
        {"id": 13, "type": "Note", "pos": [X[1], 0], "size": [340, 170], "text": FIRST_TRY},
    ]
    links += [
        (1, "generator", 8, "generator"), (7, "lpips", 8, "lpips"), (6, "IMAGE", 8, "image"),
        # the edit runs on the generator Project Image returns: the copy tuned around the picture
        (8, "generator", 9, "generator"), (2, "clip", 9, "clip"), (5, "embedding", 9, "target"),
        (8, "wplus", 9, "source"), (8, "generator", 10, "generator"), (9, "wplus", 10, "wplus"),
        (10, "image", 11, "images"), (8, "projection", 12, "images"),
    ]
    return nodes, links


# The file name of each example is the title the template browser shows (frontends take the file name);
# the short names stay usable in code and tests through example_path().
EXAMPLE_FILES = {
    "landscape_sound_edit": "SGIM - Landscape edited by a sound",
    "face_edit_with_identity": "SGIM - Face edited by a sound, identity kept",
    "music_to_painting": "SGIM - Painting edited by music",
    "sound_and_text_style_mix": "SGIM - Sound and text edits mixed by layer",
    "chain_upscale_and_save": "SGIM - Sound edit upscaled and saved",
    "music_video": "SGIM - Music video from a song",
    "edit_my_painting": "SGIM - Your own painting edited by a sound",
}


def example_path(name: str, folder: Path | None = None) -> Path:
    """The JSON of an example, by its short name (or its file name)."""
    return (folder or REPO / "example_workflows") / f"{EXAMPLE_FILES.get(name, name)}.json"


EXAMPLES = {
    "landscape_sound_edit": landscape_sound_edit,
    "face_edit_with_identity": face_identity_edit,
    "music_to_painting": music_to_painting,
    "sound_and_text_style_mix": sound_text_style_mix,
    "chain_upscale_and_save": chain_upscale_save,
    "music_video": music_video,
    "edit_my_painting": edit_my_painting,
}


def main(argv: list[str]) -> int:
    """``SERVER [OUT_DIR [NAME ...]]``: drafts of all examples, or only of the NAMEs."""
    server = argv[0].rstrip("/")
    out_dir = Path(argv[1]) if len(argv) > 1 else REPO / "example_workflows"
    chosen = argv[2:] or list(EXAMPLES)
    with urllib.request.urlopen(f"{server}/object_info") as response:
        definitions = json.load(response)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        nodes, links = EXAMPLES[name]()
        workflow = build_ui_workflow(nodes, links, definitions)
        declare_models(workflow)
        path = example_path(name, out_dir)
        path.write_text(json.dumps(workflow, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
