"""The values everything else passes around: configuration parsed once, and what each request makes.

All immutable: configuration is frozen dataclasses (route, config), what is made anew for
every request is NamedTuples (exchange), and the kinds are enums (kinds). Standard library
only: every package of the proxy, and comparators/, toggles/ and reports/, import from here.
"""

from proxy.model.config import (Address, AdminSpec, Config, Problem, ReportsSpec, ServerSpec, TogglesSpec, TracingSpec,
                                UnleashSpec)
from proxy.model.exchange import (Answered, Comparison, Decision, Difference, Divergence, Failure, Observation,
                                  RequestFacts, RequestRecord, ToggleCheck)
from proxy.model.kinds import (BreakerState, ClientFailure, FailureKind, Phase, Provider, Serve, Side, SkipReason,
                               StickinessKind, StoreState, TunnelEnd, Verdict)
from proxy.model.route import (BreakerSpec, CompareSpec, Gates, Match, ParallelRun, Rewrite, RolloutPlan, Route,
                               Stickiness, ToggleSpec, Upstream, is_segment_prefix)
from proxy.model.tls import Certificate, ListenerTls, UpstreamTls

__all__ = ["AdminSpec", "Address", "Answered", "BreakerSpec", "BreakerState", "Certificate", "ClientFailure",
           "CompareSpec", "Comparison", "Config", "Decision", "Difference", "Divergence", "Failure", "FailureKind",
           "Gates", "ListenerTls", "Match", "Observation", "ParallelRun", "Phase", "Problem", "Provider",
           "ReportsSpec", "TracingSpec", "RequestFacts", "RequestRecord", "Rewrite", "RolloutPlan", "Route", "Serve", "ServerSpec",
           "Side", "SkipReason", "Stickiness", "StickinessKind", "StoreState", "ToggleCheck", "ToggleSpec",
           "TogglesSpec", "TunnelEnd", "UnleashSpec", "Upstream", "UpstreamTls", "Verdict", "is_segment_prefix"]
