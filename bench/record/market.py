"""What the market charges: public GPU rental prices per GPU-hour, public API prices per million
tokens of open models, and the power a GPU draws at the wall; each row dated, with its source,
and marked when the figure was read from a copy rather than the seller's own page (second-hand).

Gathered 2026-11 for tokbench by a research pass over public pages and the repositories that
transcribe them; nothing here is estimated. Prices change: every comparison prints the date.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuPrice:
    """One public price of renting a GPU, per GPU-hour."""

    gpu: str  # spec-table key
    usd: float  # per GPU-hour
    seller: str  # who, and what (instance, terms)
    kind: str  # "on-demand", "capacity block", "specialised cloud", "index"
    date: str  # when read or last updated, as the source gives it ("" where it gives none)
    source: str
    second_hand: bool  # read from a copy (a transcription, an index's quote), not the seller


AWS_OD = "vantage-sourced tsaol/aws-gpu data, us-east-1"
AWS_CB = (
    "koyakimu/ec2-capacity-blocks-for-ml-pricing-json data/pricing.json, scraped from "
    "aws.amazon.com/ec2/capacityblocks/pricing/"
)
COREWEAVE = "coreweave.com/pricing via api-evangelist/coreweave (verbatim)"

# fmt: off
GPU_PRICES: tuple[GpuPrice, ...] = (
    GpuPrice("a100-sxm", 3.43, "AWS p4de.24xlarge (8×A100 80GB, $27.447/h)", "on-demand",
             "2026-08-26", AWS_OD, True),
    GpuPrice("h100-sxm", 6.88, "AWS p5.48xlarge (8×H100, $55.04/h)", "on-demand", "2026-08-26",
             AWS_OD + "; the same in datareceipts/data-receipts hyperscalers.json (2026-11-09)",
             True),
    GpuPrice("h200", 7.91, "AWS p5en.48xlarge (8×H200, $63.296/h)", "on-demand", "2026-08-26",
             AWS_OD, True),
    GpuPrice("b200", 14.24, "AWS p6-b200.48xlarge (8×B200, $113.93/h)", "on-demand",
             "2026-08-26", AWS_OD, True),
    GpuPrice("b300", 17.80, "AWS p6-b300.48xlarge (8×B300, $142.42/h)", "on-demand",
             "2026-08-26", AWS_OD, True),
    GpuPrice("h100-sxm", 12.29, "Azure ND96isr H100 v5, eastus", "on-demand", "2026-11-09",
             "datareceipts/data-receipts 109-gpu-pricing hyperscalers.json", True),
    GpuPrice("h100-sxm", 10.9791, "Google Cloud a3-highgpu-1g (on-demand equivalent)",
             "on-demand", "2026-09-26",
             "silybench-data prices/gpu_hourly.yaml, from the Cloud Billing Catalog API", True),
    GpuPrice("h200", 10.4365, "Google Cloud a3-ultragpu-8g", "on-demand", "2026-10-13",
             "HF dataset tanod/cloud-gpu-list-prices", True),
    GpuPrice("h100-sxm", 10.0, "Oracle BM.GPU.H100.8 (approximate)", "on-demand", "2026-04-14",
             "oraclelicensingexperts.com (third party)", True),
    GpuPrice("h200", 12.25, "Oracle H200 (approximate)", "on-demand", "2026-04-14",
             "oraclelicensingexperts.com (third party)", True),
    GpuPrice("b200", 16.0, "Oracle B200 (approximate)", "on-demand", "2026-04-14",
             "oraclelicensingexperts.com (third party)", True),
    GpuPrice("a100-sxm", 4.0, "Oracle A100 (approximate)", "on-demand", "2026-04-14",
             "oraclelicensingexperts.com (third party)", True),
    GpuPrice("a100-sxm", 1.845, "AWS p4de capacity block", "capacity block", "2026-01-31",
             AWS_CB, True),
    GpuPrice("h100-sxm", 3.933, "AWS p5.48xlarge capacity block", "capacity block",
             "2026-01-31", AWS_CB, True),
    GpuPrice("h200", 4.975, "AWS p5e (H200) capacity block", "capacity block", "2026-01-31",
             AWS_CB, True),
    GpuPrice("h200", 5.201, "AWS p5en (H200) capacity block", "capacity block", "2026-01-31",
             AWS_CB, True),
    GpuPrice("b200", 9.36, "AWS p6-b200 capacity block", "capacity block", "2026-01-31",
             AWS_CB, True),
    GpuPrice("b300", 11.70, "AWS p6-b300 capacity block", "capacity block", "2026-01-31",
             AWS_CB, True),
    GpuPrice("gb200", 10.582, "AWS u-p6e-gb200 x72/x36 capacity block (the page's $10.582, "
             "almost certainly per GB200 GPU-hour)", "capacity block", "2026-01-31", AWS_CB,
             True),
    GpuPrice("gb200", 10.50, "CoreWeave GB200 NVL72 ($42.00/h per 4 GPUs)", "specialised cloud",
             "2026-09-20", COREWEAVE, True),
    GpuPrice("b200", 8.60, "CoreWeave HGX B200 ($68.80/h per 8)", "specialised cloud",
             "2026-09-20", COREWEAVE, True),
    GpuPrice("h200", 6.305, "CoreWeave HGX H200 ($50.44/h per 8)", "specialised cloud",
             "2026-09-20", COREWEAVE, True),
    GpuPrice("h100-sxm", 6.155, "CoreWeave HGX H100 ($49.24/h per 8)", "specialised cloud",
             "2026-09-20", COREWEAVE, True),
    GpuPrice("a100-sxm", 2.70, "CoreWeave A100 ($21.60/h per 8)", "specialised cloud",
             "2026-09-20", COREWEAVE, True),
    GpuPrice("b200", 6.69, "Lambda 8×B200", "specialised cloud", "2026-09-20",
             "Lambda's price list (the page was not recorded)", False),
    GpuPrice("h100-sxm", 3.99, "Lambda 8×H100 SXM", "specialised cloud", "2026-09-20",
             "Lambda's price list (the page was not recorded)", False),
    GpuPrice("a100-sxm", 2.79, "Lambda 8×A100 80GB", "specialised cloud", "2026-09-20",
             "Lambda's price list (the page was not recorded)", False),
    GpuPrice("h100-sxm", 3.85, "Nebius H100", "specialised cloud", "2026-09-25",
             "nebius.com/prices", False),
    GpuPrice("h200", 4.50, "Nebius H200", "specialised cloud", "2026-09-25",
             "nebius.com/prices", False),
    GpuPrice("b200", 7.15, "Nebius B200", "specialised cloud", "2026-09-25",
             "nebius.com/prices", False),
    GpuPrice("h100-sxm", 2.69, "RunPod H100 SXM, community cloud", "specialised cloud",
             "2026-09-25", "RunPod's price list (the page was not recorded)", False),
    GpuPrice("h200", 3.59, "RunPod H200, community cloud", "specialised cloud", "2026-09-25",
             "RunPod's price list (the page was not recorded)", False),
    GpuPrice("b200", 5.98, "RunPod B200, community cloud", "specialised cloud", "2026-09-25",
             "RunPod's price list (the page was not recorded)", False),
    GpuPrice("b300", 7.40, "Hyperstack B300", "specialised cloud", "2026-08-26",
             "Hyperstack's price list (the page was not recorded)", False),
    GpuPrice("b200", 6.00, "Hyperstack B200", "specialised cloud", "2026-08-26",
             "Hyperstack's price list (the page was not recorded)", False),
    GpuPrice("h200", 3.99, "Hyperstack H200", "specialised cloud", "2026-08-26",
             "Hyperstack's price list (the page was not recorded)", False),
    GpuPrice("h100-sxm", 3.20, "Hyperstack H100", "specialised cloud", "2026-08-26",
             "Hyperstack's price list (the page was not recorded)", False),
    GpuPrice("h100-sxm", 2.35, "SemiAnalysis index, 1-year reserved H100 (up from $1.70 in "
             "October 2025)", "index", "2026-03", "techreaderdaily.com quoting SemiAnalysis",
             True),
    GpuPrice("h100-sxm", 2.60, "Silicon Data H100 index (~)", "index", "",
             "a report quoting Silicon Data", True),
    GpuPrice("b200", 5.30, "Silicon Data B200 index (~)", "index", "",
             "a report quoting Silicon Data", True),
)
# fmt: on

# The deepest discount a public price list states for committing: CoreWeave's "up to 60%
# discounts over our On-Demand prices for committed usage" (coreweave.com/pricing, 2026-09-20).
COMMITTED_DISCOUNT = 0.60
COMMITTED_SOURCE = "CoreWeave: 'up to 60% discounts over our On-Demand prices for committed usage'"

# A GPU kind no public price was found for, and the kind whose prices stand in: GB300 is the
# B300's Blackwell Ultra GPU in a Grace-coupled NVL72 rack (no GB300 rental price was found).
STAND_INS = {"gb300": "b300"}


# The research pass found these prices but kept no page for them.
NOT_RECORDED = "source page not recorded"


@dataclass(frozen=True)
class ApiPrice:
    """One public API price of an open model, USD per million input and output tokens."""

    model: str  # tokbench's model name
    seller: str
    input_usd: float
    output_usd: float
    date: str  # "" where the source gives none
    source: str


# fmt: off
API_PRICES: tuple[ApiPrice, ...] = (
    ApiPrice("gpt-oss-120b", "Groq", 0.15, 0.60, "",
             "braintrust-proxy issues; confirmed by three sources"),
    ApiPrice("gpt-oss-120b", "Together", 0.15, 0.60, "",
             "braintrust-proxy issues; confirmed by three sources"),
    ApiPrice("gpt-oss-120b", "Cerebras", 0.35, 0.75, "2025-11-06",
             "pydantic/genai-prices cerebras.yml"),
    ApiPrice("gpt-oss-120b", "DeepInfra", 0.039, 0.17, "2026-07-02",
             "truefoundry/models PR #1672"),
    ApiPrice("gpt-oss-20b", "Groq", 0.075, 0.30, "", "aicost crate data_groq.rs"),
    ApiPrice("Llama-3.1-8B", "Groq", 0.05, 0.08, "", NOT_RECORDED),
    ApiPrice("Llama-3.1-8B", "DeepInfra (Turbo, quantised)", 0.02, 0.04, "2026-11-05",
             "deepinfra.com/pricing via HF hundredthrun/gpu-cloud-prices"),
    ApiPrice("Llama-3.1-8B", "Cerebras", 0.10, 0.10, "2025-11-07", NOT_RECORDED),
    ApiPrice("Llama-3.3-70B", "Groq", 0.59, 0.79, "", NOT_RECORDED),
    ApiPrice("Llama-3.3-70B", "DeepInfra (Turbo, quantised)", 0.10, 0.32, "2026-11-05",
             "deepinfra.com/pricing via HF hundredthrun/gpu-cloud-prices"),
    ApiPrice("Llama-3.3-70B", "Cerebras", 0.85, 1.20, "2025-11-07", NOT_RECORDED),
    ApiPrice("Llama-3.1-405B", "Together (Turbo)", 3.50, 3.50, "", NOT_RECORDED),
    ApiPrice("Llama-3.1-405B", "DeepInfra", 0.80, 0.80, "2026-11-05",
             "deepinfra.com/pricing via HF hundredthrun/gpu-cloud-prices"),
    ApiPrice("DeepSeek-V3", "DeepSeek (deepseek-chat, cache miss)", 0.27, 1.10, "",
             "api-docs.deepseek.com"),
    ApiPrice("DeepSeek-V3", "DeepInfra (V3-0324)", 0.24, 0.90, "2026-07-02",
             "truefoundry/models PR #1672"),
    ApiPrice("Qwen3-235B-A22B", "OpenRouter", 0.455, 1.82, "", NOT_RECORDED),
    ApiPrice("Qwen3-30B-A3B", "OpenRouter", 0.06, 0.22, "", NOT_RECORDED),
    ApiPrice("Mixtral-8x7B", "DeepInfra", 0.54, 0.54, "2026-11-05",
             "deepinfra.com/pricing via HF hundredthrun/gpu-cloud-prices"),
)
# fmt: on


@dataclass(frozen=True)
class WallPower:
    """What one GPU of a kind draws at the wall, at most, as its system's rating shares it."""

    gpu: str
    kw_per_gpu: float
    what: str
    source: str


# fmt: off
WALL_POWER: tuple[WallPower, ...] = (
    WallPower("b200", 14.3 / 8, "DGX B200: 14.3 kW max for 8 GPUs",
              "docs.nvidia.com DGX B200 user guide"),
    WallPower("h100-sxm", 10.2 / 8, "DGX H100: 10.2 kW max for 8 GPUs",
              "NVIDIA DGX H100/H200 user guide (via unanswered.io)"),
    WallPower("h200", 10.2 / 8, "DGX H200: 10.2 kW max for 8 GPUs",
              "NVIDIA DGX H100/H200 user guide (via unanswered.io)"),
    WallPower("gb200", 120 / 72, "GB200 NVL72: ~120 kW a rack of 72 GPUs",
              "ServeTheHome, GTC 2024"),
    WallPower("gb300", 142 / 72, "GB300 NVL72: up to 142 kW a rack of 72 GPUs",
              "NVIDIA Enterprise RA, NVL72 AI factory components"),
)
# fmt: on

# Power usage effectiveness (facility power over IT power): the deal's cloud's, and the
# industry's for comparison.
PUE_AWS = 1.15  # AWS, 2024 global (AWS sustainability page)
PUE_SOURCE = "AWS's 2024 global PUE (AWS sustainability page); the industry averages 1.56-1.58 "
PUE_SOURCE += "(Uptime Institute 2023/2024), Google 1.10 (2023)"
# US average industrial electricity price, 2023: 8.06 ¢/kWh (EIA).
ELECTRICITY_USD_PER_KWH = 0.0806
ELECTRICITY_SOURCE = "EIA: US average industrial price, 2023"
