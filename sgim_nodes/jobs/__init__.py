"""The job layer: one entry point per job, called by both front ends (ComfyUI nodes, command line).

A job takes a *request* (the mathematical parameters, already validated) and a *run*
(:class:`~sgim_nodes.jobs.run.Run`: the host's policies for progress and previews, cancel, the CPU
allocator and the device). Front ends build the request from their inputs, pick their run
(``TqdmRun`` on the command line, ``ComfyRun`` in ``comfy_nodes.host``) and turn the outcome into
their outputs; they decide nothing else.
"""
