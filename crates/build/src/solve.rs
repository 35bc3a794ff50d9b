//! The solver: runs a plan. Stages run in their own threads as soon as the stages they need
//! are done (independent stages in parallel); steps run in order within a stage, each looked up
//! in the cache first. A miss runs the step: RUN in the sandbox over an overlay of the stage's
//! snapshots, COPY/ADD and WORKDIR as file operations in a thread with its own mounts. Either
//! way the overlay's upper directory becomes both the new layer and the new snapshot.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use dockerfile::{Dockerfile, IgnoreMatcher, MountType, NetworkMode};
use layer::{Compression, DiffOptions, DiffSource};
use oci::{ChainId, Descriptor, DiffId, Digest, History, ImageConfig, Sha256Hasher};
use store::{CacheRecord, CachedLayer, ImageRecord, Store};

use crate::cachekey::{KeyInputs, context_files, explain_miss};
use crate::context::BuildContext;
use crate::copy::{self, Chmod, CopySpec, SourceRoot};
use crate::plan::{
    self, Base, BuildPlan, CopyStep, PlanOptions, ResolvedImage, RunStep, Source, Step, StepKind,
};
use crate::progress::{Progress, ProgressEvent};
use crate::ssh;
use crate::users;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Plan(#[from] plan::PlanError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Context(#[from] crate::context::ContextError),
    /// A step failed: which one, on which Dockerfile line, and why.
    #[error("{step} (line {line}): {message}")]
    Step {
        step: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

fn step_error(step: &Step, message: impl Into<String>) -> BuildError {
    BuildError::Step {
        step: step.source.trim().to_string(),
        line: step.span.start,
        message: message.into(),
    }
}

/// Everything a build needs besides the plan.
pub struct BuildRequest<'a> {
    pub store: &'a Store,
    pub dockerfile: &'a Dockerfile,
    pub context: Option<&'a BuildContext>,
    pub options: PlanOptions,
    pub no_cache: bool,
    /// `--network`: what `RUN` gets when it does not say (`default`).
    pub network: sandbox::Network,
    /// `--secret id=…,src=…`.
    pub secrets: HashMap<String, PathBuf>,
    /// `--ssh id=SOCKET`: the ssh-agent sockets `RUN --mount=type=ssh` may use.
    pub ssh: HashMap<String, PathBuf>,
    pub source_date_epoch: Option<i64>,
    pub compression: Compression,
    /// `--label`s for the final image.
    pub labels: BTreeMap<String, String>,
    pub progress: &'a dyn Progress,
    /// Names this Dockerfile and context for `--explain-cache` across builds.
    pub identity: String,
    /// Finds a base or `--from` image that is not in the store (a registry pull); without
    /// it, such an image is an error. Also asked first for every image when `pull` is set.
    pub resolver: Option<&'a dyn ImageResolver>,
    /// Re-resolve image tags through the resolver even when the store has them (`--pull`).
    pub pull: bool,
    /// Downloads for `ADD <url>`; without it, URL sources are an error.
    pub fetcher: Option<&'a dyn UrlFetcher>,
    /// `--squash` / `--squash-all`.
    pub squash: Squash,
    /// The most layers the image may have (`--max-layers`, 127 by default).
    pub max_layers: usize,
    /// Imported build caches (`--cache-from`), asked when the local cache has no usable record.
    pub cache_from: Option<&'a dyn CacheSource>,
}

/// A build cache beside the local one (a registry, an OCI layout): for a step key, brings the
/// record's layer blob into the store and returns the record, or `None` (a miss). `log` shows a
/// line in the step's progress.
pub trait CacheSource: Sync {
    fn lookup(&self, store: &Store, key: &Digest, log: &dyn Fn(&str)) -> Option<CacheRecord>;
}

/// Collapsing layers after the build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Squash {
    #[default]
    No,
    /// The layers this build added become one, on top of the untouched base layers.
    Build,
    /// One layer of everything.
    All,
}

/// The limit docker has always had (aufs could stack no more), and the default here.
pub const DEFAULT_MAX_LAYERS: usize = 127;

/// Brings an image into the store (the registry crate implements it for the CLI).
pub trait ImageResolver: Sync {
    fn resolve(&self, store: &Store, reference: &str) -> Result<ImageRecord, String>;
}

/// Fetches a URL for `ADD`: the body, and its `Last-Modified` time when the server sent one.
pub trait UrlFetcher: Sync {
    fn fetch(&self, url: &str) -> Result<(Box<dyn Read + Send>, Option<i64>), String>;
}

/// The built image, stored but not yet named.
#[derive(Debug)]
pub struct BuildOutput {
    pub descriptor: Descriptor,
    pub config: ImageConfig,
    pub warnings: Vec<String>,
    /// The cache key of every step of the target's stages, for exporting the cache.
    pub cache_keys: Vec<Digest>,
}

/// A layer of a stage's filesystem.
#[derive(Clone, Debug)]
struct LayerRef {
    blob: Descriptor,
    diff_id: DiffId,
    chain: ChainId,
    snapshot: PathBuf,
}

/// A finished stage.
#[derive(Clone, Debug)]
struct StageResult {
    key: Digest,
    layers: Vec<LayerRef>,
    history: Vec<History>,
    /// How many of `layers` and `history` come from the base image of the stage chain.
    base_layers: usize,
    base_history: usize,
}

impl StageResult {
    /// Snapshot directories top first, as overlay lower dirs.
    fn lowers(&self) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|l| l.snapshot.clone())
            .collect()
    }
}

/// A stage's outcome as other stages see it (the error text, or the result).
type Outcome = Result<Arc<StageResult>, String>;

/// Stage results shared between stage threads.
struct Results {
    slots: Mutex<Vec<Option<Outcome>>>,
    ready: Condvar,
}

impl Results {
    fn wait(&self, i: usize) -> Result<Arc<StageResult>, BuildError> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = &slots[i] {
                return r
                    .clone()
                    .map_err(|_| BuildError::Other("a stage it depends on failed".into()));
            }
            slots = self.ready.wait(slots).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn set(&self, i: usize, r: Outcome) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots[i] = Some(r);
        self.ready.notify_all();
    }
}

/// Runs a build: resolves base images in the store, plans, solves, stores the image.
pub fn build(req: &BuildRequest<'_>) -> Result<BuildOutput, BuildError> {
    let mut images: HashMap<String, ImageRecord> = HashMap::new();
    let mut resolved: HashMap<String, ResolvedImage> = HashMap::new();
    for r in plan::external_images(req.dockerfile, &req.options)? {
        let record = resolve_image(req, &r)?;
        resolved.insert(
            r.clone(),
            ResolvedImage {
                config: record.config.clone(),
            },
        );
        images.insert(r, record);
    }
    let plan = plan::plan(req.dockerfile, &req.options, &resolved)?;
    check_layer_limit(req, &plan, &images)?;
    let mut warnings = plan.warnings.clone();
    if !plan.unused_build_args.is_empty() {
        let w = format!(
            "[Warning] One or more build-args [{}] were not consumed",
            plan.unused_build_args.join(" ")
        );
        req.progress
            .event(ProgressEvent::Warning { message: w.clone() });
        warnings.push(w);
    }
    let epoch = req.source_date_epoch.or_else(|| {
        req.options
            .build_args
            .get("SOURCE_DATE_EPOCH")
            .and_then(|v| v.parse().ok())
    });
    let solver = Solver {
        req,
        keys: Mutex::new(Vec::new()),
        downloads: Mutex::new(HashMap::new()),
        plan: &plan,
        images: &images,
        results: Results {
            slots: Mutex::new(vec![None; plan.stages.len()]),
            ready: Condvar::new(),
        },
        vertex_base: vertex_numbers(&plan),
        epoch,
    };
    let target = solver.run_all()?;
    let target = solver.squash(&target)?;
    let output = solver.assemble(&target)?;
    let cache_keys = solver.keys.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(BuildOutput {
        warnings,
        cache_keys,
        ..output
    })
}

/// How many layers the target image will have, from the plan alone.
fn planned_layers(
    plan: &BuildPlan,
    images: &HashMap<String, ImageRecord>,
    stage: usize,
) -> (usize, usize) {
    let s = &plan.stages[stage];
    let (base, added) = match &s.base {
        Base::Scratch => (0, 0),
        Base::Image(r) => (images.get(r).map_or(0, |i| i.manifest.layers.len()), 0),
        Base::Stage(p) => planned_layers(plan, images, *p),
    };
    (
        base,
        added + s.steps.iter().filter(|st| st.makes_layer()).count(),
    )
}

/// Refuses, before anything runs, an image deeper than the layer limit.
fn check_layer_limit(
    req: &BuildRequest<'_>,
    plan: &BuildPlan,
    images: &HashMap<String, ImageRecord>,
) -> Result<(), BuildError> {
    let (base, added) = planned_layers(plan, images, plan.target);
    let total = match req.squash {
        Squash::No => base + added,
        Squash::Build => base + usize::from(added > 0),
        Squash::All => 1,
    };
    if total > req.max_layers {
        return Err(BuildError::Other(format!(
            "the image would have {total} layers ({base} from its base, {added} from this build), more than the limit of {}: merge RUN instructions, build with --squash (the build's layers become one) or --squash-all, or raise the limit with --max-layers {total}",
            req.max_layers
        )));
    }
    Ok(())
}

/// A base or `--from` image: from the store, or through the resolver (always first with
/// `--pull`).
fn resolve_image(req: &BuildRequest<'_>, reference: &str) -> Result<ImageRecord, BuildError> {
    if req.pull
        && let Some(resolver) = req.resolver
    {
        return resolver
            .resolve(req.store, reference)
            .map_err(|e| BuildError::Other(format!("pulling {reference}: {e}")));
    }
    match req.store.resolve_image(reference) {
        Ok(record) => Ok(record),
        Err(store::StoreError::ImageNotFound(_)) => match req.resolver {
            Some(resolver) => resolver
                .resolve(req.store, reference)
                .map_err(|e| BuildError::Other(format!("pulling {reference}: {e}"))),
            None => Err(BuildError::Other(format!(
                "image {reference} is not in the store: load it with `strata load` or `strata pull {reference}`"
            ))),
        },
        Err(other) => Err(other.into()),
    }
}

/// The first vertex number of each stage (its FROM); its steps follow.
fn vertex_numbers(plan: &BuildPlan) -> Vec<usize> {
    let mut next = 1;
    plan.stages
        .iter()
        .map(|s| {
            let base = next;
            next += 1 + s.steps.iter().filter(|st| st.makes_layer()).count();
            base
        })
        .collect()
}

struct Solver<'a> {
    req: &'a BuildRequest<'a>,
    /// Every step key used, for cache export.
    keys: Mutex<Vec<Digest>>,
    /// `ADD <url>` downloads of this build, by URL.
    downloads: Mutex<HashMap<String, Arc<Download>>>,
    plan: &'a BuildPlan,
    images: &'a HashMap<String, ImageRecord>,
    results: Results,
    vertex_base: Vec<usize>,
    epoch: Option<i64>,
}

/// The mutable state of a stage while its steps run.
struct StageRun {
    key: Digest,
    layers: Vec<LayerRef>,
    history: Vec<History>,
    base_layers: usize,
    base_history: usize,
}

impl Solver<'_> {
    fn run_all(&self) -> Result<Arc<StageResult>, BuildError> {
        let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for i in 0..self.plan.stages.len() {
                let errors = &errors;
                scope.spawn(move || {
                    let r = self.run_stage(i);
                    match r {
                        Ok(res) => self.results.set(i, Ok(Arc::new(res))),
                        Err(e) => {
                            self.results.set(i, Err(e.to_string()));
                            errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                        }
                    }
                });
            }
        });
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        // A stage that failed because its dependency failed is noise; report the root cause.
        errors
            .sort_by_key(|e| matches!(e, BuildError::Other(m) if m.contains("depends on failed")));
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        self.results.wait(self.plan.target)
    }

    /// A stage as the Dockerfile names it: its name, or `stage-N`.
    fn stage_name(&self, i: usize) -> String {
        let stage = &self.plan.stages[i];
        stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index))
    }

    fn stage_label(&self, i: usize) -> String {
        let stage = &self.plan.stages[i];
        match (&stage.name, self.plan.stages.len()) {
            (Some(n), _) => format!("{n} "),
            (None, 1) => String::new(),
            (None, _) => format!("stage-{} ", stage.index),
        }
    }

    fn run_stage(&self, i: usize) -> Result<StageResult, BuildError> {
        let stage = &self.plan.stages[i];
        let total = 1 + stage.steps.iter().filter(|s| s.makes_layer()).count();
        let label = self.stage_label(i);
        let from_id = self.vertex_base[i];
        let started = Instant::now();
        let mut run = match &stage.base {
            Base::Scratch => StageRun {
                key: Digest::of(
                    format!(
                        "{}\0scratch\0{}",
                        crate::cachekey::KEY_VERSION,
                        stage.platform
                    )
                    .as_bytes(),
                ),
                layers: Vec::new(),
                history: Vec::new(),
                base_layers: 0,
                base_history: 0,
            },
            Base::Image(r) => {
                let record = &self.images[r];
                self.req.progress.event(ProgressEvent::Started {
                    id: from_id,
                    name: format!("[{label}1/{total}] FROM {}", display_ref(r, record)),
                });
                self.image_run(record)?
            }
            Base::Stage(p) => {
                self.req.progress.event(ProgressEvent::Started {
                    id: from_id,
                    name: format!("[{label}1/{total}] FROM {}", self.stage_name(*p)),
                });
                let parent = self.results.wait(*p)?;
                StageRun {
                    key: parent.key.clone(),
                    layers: parent.layers.clone(),
                    history: parent.history.clone(),
                    base_layers: parent.base_layers,
                    base_history: parent.base_history,
                }
            }
        };
        if matches!(stage.base, Base::Scratch) {
            self.req.progress.event(ProgressEvent::Started {
                id: from_id,
                name: format!("[{label}1/{total}] FROM scratch"),
            });
        }
        self.req.progress.event(ProgressEvent::Done {
            id: from_id,
            seconds: started.elapsed().as_secs_f64(),
        });
        let mut vertex = from_id;
        let mut position = 1;
        for step in &stage.steps {
            if !step.makes_layer() {
                if let Some(h) = &step.history {
                    run.history.push(h.clone());
                }
                continue;
            }
            vertex += 1;
            position += 1;
            let name = format!(
                "[{label}{position}/{total}] {}",
                display_source(&step.source)
            );
            self.run_step(i, step, vertex, &name, &mut run)?;
        }
        Ok(StageResult {
            key: run.key,
            layers: run.layers,
            history: run.history,
            base_layers: run.base_layers,
            base_history: run.base_history,
        })
    }

    /// A stage starting from an image: its layers, unpacked once into shared snapshots.
    fn image_run(&self, record: &ImageRecord) -> Result<StageRun, BuildError> {
        let snapshots = self.req.store.ensure_snapshots(record)?;
        let layers = record
            .layers()
            .zip(oci::chain_ids(&record.config.rootfs.diff_ids))
            .zip(snapshots)
            .map(|(((blob, diff), chain), snap)| LayerRef {
                blob: blob.clone(),
                diff_id: diff.clone(),
                chain,
                snapshot: snap.path,
            })
            .collect();
        Ok(StageRun {
            key: Digest::of(
                format!(
                    "{}\0image\0{}",
                    crate::cachekey::KEY_VERSION,
                    record.manifest_digest()
                )
                .as_bytes(),
            ),
            layers,
            history: record.config.history.clone(),
            base_layers: record.manifest.layers.len(),
            base_history: record.config.history.len(),
        })
    }

    fn run_step(
        &self,
        stage: usize,
        step: &Step,
        id: usize,
        name: &str,
        run: &mut StageRun,
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        self.req.progress.event(ProgressEvent::Started {
            id,
            name: name.to_string(),
        });
        let inputs = self.key_inputs(stage, step, run)?;
        let key = inputs.key();
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.clone());
        let lock = self.lock_key(&key)?;
        let cached = if self.req.no_cache {
            None
        } else {
            self.cache_lookup(&key, id)?
        };
        let (layer, created) = match cached {
            Some(record) => {
                self.req.progress.event(ProgressEvent::Cached { id });
                let layer = record
                    .layer
                    .ok_or_else(|| step_error(step, "cache record without a layer"))?;
                (self.cached_layer(run, layer)?, record.created)
            }
            None => {
                if !self.req.no_cache {
                    let reason = self.miss_reason(stage, step, &inputs);
                    self.req.progress.event(ProgressEvent::Miss { id, reason });
                }
                let result = self.execute(step, id, run);
                let layer = match result {
                    Ok(l) => l,
                    Err(e) => {
                        self.req.progress.event(ProgressEvent::Failed {
                            id,
                            message: e.to_string(),
                        });
                        return Err(e);
                    }
                };
                let created = self.now()?;
                self.req.store.cache_put(
                    &key,
                    &CacheRecord {
                        layer: Some(CachedLayer {
                            blob: layer.blob.clone(),
                            diff_id: layer.diff_id.clone(),
                        }),
                        created: created.clone(),
                        inputs: inputs.explained(),
                    },
                )?;
                self.remember_step(stage, step, &inputs);
                self.req.progress.event(ProgressEvent::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
                (layer, created)
            }
        };
        drop(lock);
        let mut history = step.history.clone().unwrap_or_default();
        history.created = Some(created);
        run.history.push(history);
        run.layers.push(layer);
        run.key = key;
        Ok(())
    }

    /// The local record for a key, else one an imported cache brings in (then kept locally).
    fn cache_lookup(&self, key: &Digest, id: usize) -> Result<Option<CacheRecord>, BuildError> {
        if let Some(record) = self.req.store.cache_get(key)? {
            return Ok(Some(record));
        }
        let Some(source) = self.req.cache_from else {
            return Ok(None);
        };
        let log = |line: &str| {
            self.req.progress.event(ProgressEvent::Log {
                id,
                data: format!("{line}\n").into_bytes(),
            })
        };
        let Some(record) = source.lookup(self.req.store, key, &log) else {
            return Ok(None);
        };
        self.req.store.cache_put(key, &record)?;
        Ok(self.req.store.cache_get(key)?)
    }

    /// Identical steps (same key) run once at a time, across threads and processes alike:
    /// the second waits, then finds the first's result in the cache.
    fn lock_key(&self, key: &Digest) -> Result<std::fs::File, BuildError> {
        let dir = self.req.store.root().join("cache-v1").join("locks");
        std::fs::create_dir_all(&dir)
            .map_err(|e| BuildError::Other(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(key.hex());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BuildError::Other(format!("locking {}: {e}", path.display())))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| BuildError::Other(format!("locking {}: {e}", path.display())))?;
        Ok(file)
    }

    fn now(&self) -> Result<String, BuildError> {
        let ts = match self.epoch {
            Some(e) => {
                jiff::Timestamp::from_second(e).map_err(|e| BuildError::Other(e.to_string()))?
            }
            None => jiff::Timestamp::now(),
        };
        Ok(ts.to_string())
    }

    /// The file remembering the last inputs of "this step of this Dockerfile", to explain the
    /// next miss.
    fn step_memory(&self, stage: usize, step: &Step) -> PathBuf {
        let mut h = Sha256Hasher::new();
        h.update(self.req.identity.as_bytes());
        h.update(format!("\0{}\0{}", self.plan.stages[stage].index, step.span.start).as_bytes());
        self.req
            .store
            .root()
            .join("cache-v1")
            .join("steps")
            .join(h.finish().hex())
    }

    fn remember_step(&self, stage: usize, step: &Step, inputs: &KeyInputs) {
        let path = self.step_memory(stage, step);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(data) = serde_json::to_vec(&inputs.explained()) {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, data).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }

    fn miss_reason(&self, stage: usize, step: &Step, inputs: &KeyInputs) -> String {
        let before: Option<Vec<(String, String)>> = std::fs::read(self.step_memory(stage, step))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok());
        match before {
            Some(b) => explain_miss(&b, &inputs.explained()),
            None => "not built before".to_string(),
        }
    }

    /// The inputs of a step's cache key (docs/cache-keys.md).
    fn key_inputs(
        &self,
        stage: usize,
        step: &Step,
        run: &StageRun,
    ) -> Result<KeyInputs, BuildError> {
        let mut k = KeyInputs::new(&run.key);
        k.push("platform", self.plan.stages[stage].platform.to_string());
        match &step.kind {
            StepKind::Run(r) => {
                k.push("run", serde_json::to_string(&r.args).unwrap_or_default());
                for e in &step.env {
                    let (name, value) = e.split_once('=').unwrap_or((e, ""));
                    k.push(format!("env {name}"), value);
                }
                k.push("workdir", step.workdir.clone());
                k.push("user", step.user.clone());
                k.push("network", format!("{:?}", self.network_for(r)));
                k.push("security", format!("{:?}", r.security));
                if let Some(s) = &r.script {
                    k.push("script", s.content.clone());
                }
                for m in &r.mounts {
                    k.push(format!("mount {}", m.target), self.mount_identity(m)?);
                }
            }
            StepKind::Copy(c) => {
                k.push(if c.add { "add" } else { "copy" }, copy_identity(c));
                for url in c.sources.iter().filter(|s| is_url(s)) {
                    let d = self.download(step, url, c.checksum.as_deref())?;
                    k.push(format!("url {url}"), d.digest.to_string());
                }
                let local: Vec<String> = c.sources.iter().filter(|s| !is_url(s)).cloned().collect();
                match &c.from {
                    Source::Context if local.is_empty() => {}
                    Source::Context => {
                        let ctx = self.context(step)?;
                        let excludes = excludes(c).map_err(|e| step_error(step, e))?;
                        context_files(ctx, &local, excludes.as_ref(), &mut k)?;
                    }
                    Source::Stage(p) => k.push("from", self.results.wait(*p)?.key.to_string()),
                    Source::Image(r) => {
                        k.push("from", self.images[r].manifest_digest().to_string())
                    }
                }
                if c.chown.is_some() {
                    k.push("user", step.user.clone());
                }
            }
            StepKind::Workdir(path) => {
                k.push("workdir", path.clone());
                k.push("user", step.user.clone());
            }
            StepKind::Meta => {}
        }
        if let Some(e) = self.epoch {
            k.push("source-date-epoch", e.to_string());
        }
        k.push("compression", self.req.compression.as_str());
        Ok(k)
    }

    fn mount_identity(&self, m: &plan::RunMount) -> Result<String, BuildError> {
        Ok(format!(
            "{} id={} source={} ro={} from={}",
            m.kind.as_str(),
            m.id.clone().unwrap_or_default(),
            m.source.clone().unwrap_or_default(),
            m.read_only,
            self.mount_from_identity(m)?
        ))
    }

    /// What a mount's `from=` content is, for the cache key: the stage's key, the image's
    /// digest, or the hash of the context files it can see; empty without `from=`.
    fn mount_from_identity(&self, m: &plan::RunMount) -> Result<String, BuildError> {
        Ok(match &m.from {
            Some(Source::Stage(p)) => self.results.wait(*p)?.key.to_string(),
            Some(Source::Image(r)) => self.images[r].manifest_digest().to_string(),
            Some(Source::Context) => {
                let ctx = self.req.context.ok_or_else(|| {
                    BuildError::Other("a mount from the context needs a build context".into())
                })?;
                let mut k = KeyInputs::default();
                context_files(
                    ctx,
                    &[m.source.clone().unwrap_or_else(|| ".".into())],
                    None,
                    &mut k,
                )?;
                k.key().to_string()
            }
            None => String::new(),
        })
    }

    fn context(&self, step: &Step) -> Result<&BuildContext, BuildError> {
        self.req
            .context
            .ok_or_else(|| step_error(step, "this build has no context to copy from"))
    }

    fn network_for(&self, r: &RunStep) -> sandbox::Network {
        match r.network {
            NetworkMode::Host => sandbox::Network::Host,
            NetworkMode::None => sandbox::Network::None,
            NetworkMode::Default => self.req.network,
        }
    }

    /// A cached layer: its snapshot, unpacked from the blob if it is not on disk any more.
    fn cached_layer(&self, run: &StageRun, layer: CachedLayer) -> Result<LayerRef, BuildError> {
        let chain = next_chain(run, &layer.diff_id);
        let snap = self
            .req
            .store
            .ensure_snapshot(&chain, &layer.blob, &layer.diff_id)?;
        Ok(LayerRef {
            blob: layer.blob,
            diff_id: layer.diff_id,
            chain,
            snapshot: snap.path,
        })
    }

    fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            compression: self.req.compression,
            source_date_epoch: self.epoch,
        }
    }

    /// Turns a finished upper directory into the step's layer and snapshot.
    fn commit(
        &self,
        run: &StageRun,
        pending: store::PendingSnapshot,
        overlay: bool,
    ) -> Result<LayerRef, BuildError> {
        let fs = pending.fs();
        let source = if overlay {
            DiffSource::OverlayUpper(&fs)
        } else {
            DiffSource::Tree(&fs)
        };
        let (blob, diff_id) = self.req.store.write_layer(source, &self.diff_options())?;
        let chain = next_chain(run, &diff_id);
        let snap = self.req.store.commit_snapshot(pending, &chain)?;
        Ok(LayerRef {
            blob,
            diff_id,
            chain,
            snapshot: snap.path,
        })
    }

    fn execute(&self, step: &Step, id: usize, run: &StageRun) -> Result<LayerRef, BuildError> {
        match &step.kind {
            StepKind::Run(r) => self.execute_run(step, r, id, run),
            StepKind::Copy(c) => self.execute_copy(step, c, run),
            StepKind::Workdir(path) => self.execute_workdir(step, path, run),
            StepKind::Meta => Err(step_error(step, "metadata steps make no layer")),
        }
    }

    fn scratch(&self, step: &Step) -> Result<tempfile::TempDir, BuildError> {
        tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(self.req.store.tmp_dir())
            .map_err(|e| step_error(step, format!("creating a scratch directory: {e}")))
    }

    fn execute_workdir(
        &self,
        step: &Step,
        path: &str,
        run: &StageRun,
    ) -> Result<LayerRef, BuildError> {
        let pending = self.req.store.new_pending_snapshot()?;
        let scratch = self.scratch(step)?;
        let epoch = self.epoch;
        let user = step.user.clone();
        let target = PathBuf::from(path);
        self.with_dest(
            run,
            &pending,
            &scratch,
            false,
            &[],
            |_| {
                let owner = if user.is_empty() {
                    (0, 0)
                } else {
                    let (passwd, group) = read_user_files();
                    users::resolve_chown(&user, &passwd, &group).unwrap_or((0, 0))
                };
                let created = copy::make_dirs(&target, owner).map_err(|e| e.to_string())?;
                if let Some(e) = epoch {
                    for d in created.iter().rev() {
                        copy::set_times(d, e, 0).map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            },
            Ok,
        )
        .map_err(|e| step_error(step, e))?;
        self.commit(run, pending, true)
    }

    /// Runs `work` chrooted into the step's destination: the stage's layers mounted with
    /// `pending` as the upper directory (or, for `--link`, the empty `pending` itself), with
    /// the source (if any) mounted first and handed to `work` as a directory fd. `after` runs
    /// with what `work` returned, back at the real root but with the mounts still in place.
    #[allow(clippy::too_many_arguments)]
    fn with_dest<T, F, G>(
        &self,
        run: &StageRun,
        pending: &store::PendingSnapshot,
        scratch: &tempfile::TempDir,
        link: bool,
        sources: &[&SourceDir],
        work: F,
        after: G,
    ) -> Result<(), String>
    where
        F: FnOnce(Vec<std::os::fd::OwnedFd>) -> Result<T, String> + Send,
        G: FnOnce(T) -> Result<(), String> + Send,
        T: Send,
    {
        let lowers = run_lowers(run);
        let (upper, workdir, mnt) = (
            pending.fs(),
            scratch.path().join("work"),
            scratch.path().join("mnt"),
        );
        for d in [&workdir, &mnt] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        if chroot_isolation() {
            return with_copied_dest(
                &lowers,
                &upper,
                &mnt,
                scratch.path(),
                link,
                sources,
                work,
                after,
            );
        }
        sandbox::in_private_mounts(|| {
            let mut src_fds = Vec::new();
            for (i, source) in sources.iter().enumerate() {
                let fd = match source {
                    SourceDir::Plain(p) => {
                        SourceRoot::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?
                    }
                    SourceDir::Layers(l) => {
                        let srcmnt = scratch.path().join(format!("src{i}"));
                        std::fs::create_dir_all(&srcmnt)
                            .map_err(|e| format!("creating {}: {e}", srcmnt.display()))?;
                        sandbox::mount_layers(l, None, &srcmnt, scratch.path())
                            .map_err(|e| format!("mounting the source: {e}"))?;
                        SourceRoot::open(&srcmnt).map_err(|e| format!("opening the source: {e}"))?
                    }
                };
                src_fds.push(fd);
            }
            let root = if link {
                upper.clone()
            } else {
                sandbox::mount_layers(&lowers, Some((&upper, &workdir)), &mnt, scratch.path())
                    .map_err(|e| format!("mounting the stage's layers: {e}"))?;
                mnt.clone()
            };
            let guard = sandbox::enter_root(&root)
                .map_err(|e| format!("entering the stage's root: {e}"))?;
            let result = work(src_fds);
            guard
                .leave()
                .map_err(|e| format!("leaving the stage's root: {e}"))?;
            after(result?)
        })
        .map_err(|e| format!("starting a mount namespace: {e}"))?
    }

    fn execute_copy(
        &self,
        step: &Step,
        c: &CopyStep,
        run: &StageRun,
    ) -> Result<LayerRef, BuildError> {
        let pending = self.req.store.new_pending_snapshot()?;
        let scratch = self.scratch(step)?;
        let groups = self.copy_groups(step, c, &scratch)?;
        let ctx = match &c.from {
            Source::Context => self.req.context,
            _ => None,
        };
        let include = |rel: &str| ctx.is_none_or(|ctx| ctx.entry(rel).is_some());
        let include_ref: &(dyn Fn(&str) -> bool + Sync) = &include;
        let chmod = c
            .chmod
            .as_deref()
            .map(|m| Chmod::parse(m).ok_or_else(|| step_error(step, format!("invalid chmod {m}"))))
            .transpose()?;
        let excludes = excludes(c).map_err(|e| step_error(step, e))?;
        let chown = c.chown.clone();
        let epoch = self.epoch;
        let dest = c.dest.clone();
        let parents = c.parents;
        let dirs: Vec<&SourceDir> = groups.iter().map(|g| &g.dir).collect();
        self.with_dest(
            run,
            &pending,
            &scratch,
            c.link,
            &dirs,
            |fds| {
                let owner = match &chown {
                    None => None,
                    Some(spec) => {
                        let (passwd, group) = read_user_files();
                        Some(
                            users::resolve_chown(spec, &passwd, &group)
                                .map_err(|e| e.to_string())?,
                        )
                    }
                };
                let mut done = Vec::new();
                for (group, root) in groups.iter().zip(fds) {
                    let src = SourceRoot {
                        root,
                        include: group.context.then_some(include_ref),
                        keep_owner: group.keep_owner,
                    };
                    let spec = CopySpec {
                        sources: &group.sources,
                        dest: &dest,
                        owner,
                        chmod: chmod.clone(),
                        parents,
                        excludes: excludes.clone(),
                        epoch,
                        unpack: group.unpack,
                    };
                    let unpacks = copy::copy(&src, &spec).map_err(|e| oci::error_chain(&e))?;
                    done.push((unpacks, src));
                }
                Ok(done)
            },
            |done| {
                for (unpacks, src) in done {
                    unpacks.run(&src).map_err(|e| oci::error_chain(&e))?;
                }
                Ok(())
            },
        )
        .map_err(|e| step_error(step, e))?;
        self.commit(run, pending, !c.link)
    }

    /// The sources of one COPY/ADD, grouped by where they are read from: heredoc files,
    /// downloads, and the context, stage or image.
    fn copy_groups(
        &self,
        step: &Step,
        c: &CopyStep,
        scratch: &tempfile::TempDir,
    ) -> Result<Vec<CopyGroup>, BuildError> {
        let mut groups = Vec::new();
        if !c.inline.is_empty() {
            let dir = scratch.path().join("inline");
            std::fs::create_dir_all(&dir).map_err(|e| step_error(step, e.to_string()))?;
            for f in &c.inline {
                let path = dir.join(&f.name);
                std::fs::write(&path, &f.content).map_err(|e| step_error(step, e.to_string()))?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o644),
                )
                .map_err(|e| step_error(step, e.to_string()))?;
            }
            groups.push(CopyGroup {
                dir: SourceDir::Plain(dir),
                sources: c.inline.iter().map(|f| f.name.clone()).collect(),
                context: false,
                keep_owner: false,
                unpack: false,
            });
        }
        let (urls, local): (Vec<&String>, Vec<&String>) = c.sources.iter().partition(|s| is_url(s));
        if !urls.is_empty() {
            let mut names = Vec::new();
            let mut dir = None;
            for url in urls {
                let d = self.download(step, url, c.checksum.as_deref())?;
                names.push(d.name.clone());
                dir = Some(d.dir.clone());
            }
            if let Some(dir) = dir {
                groups.push(CopyGroup {
                    dir: SourceDir::Plain(dir),
                    sources: names,
                    context: false,
                    keep_owner: false,
                    unpack: c.unpack == Some(true),
                });
            }
        }
        if !local.is_empty() {
            groups.push(CopyGroup {
                dir: self.source_dir(&c.from, step)?,
                sources: local.into_iter().cloned().collect(),
                context: matches!(c.from, Source::Context),
                keep_owner: !matches!(c.from, Source::Context),
                unpack: c.add && c.unpack.unwrap_or(true),
            });
        }
        Ok(groups)
    }

    /// Downloads an `ADD <url>` once per build (the cache key needs its content), into a
    /// directory of its own: mode 0600, mtime from `Last-Modified` or the epoch, checked
    /// against `--checksum` when one is given.
    fn download(
        &self,
        step: &Step,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<Arc<Download>, BuildError> {
        let mut downloads = self.downloads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = downloads.get(url) {
            return Ok(d.clone());
        }
        let fetcher = self.req.fetcher.ok_or_else(|| {
            step_error(
                step,
                "ADD from a URL needs network access, which this build has not got",
            )
        })?;
        let (mut body, last_modified) = fetcher
            .fetch(url)
            .map_err(|e| step_error(step, format!("downloading {url}: {e}")))?;
        let tmp = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(self.req.store.tmp_dir())
            .map_err(|e| step_error(step, e.to_string()))?;
        let name = url_file_name(url);
        let path = tmp.path().join(&name);
        let mut file = std::fs::File::create(&path).map_err(|e| step_error(step, e.to_string()))?;
        let mut hasher = Sha256Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = body
                .read(&mut buf)
                .map_err(|e| step_error(step, format!("downloading {url}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut file, &buf[..n])
                .map_err(|e| step_error(step, e.to_string()))?;
        }
        let digest = hasher.finish();
        if let Some(want) = checksum
            && want != digest.to_string()
        {
            return Err(step_error(
                step,
                format!("digest mismatch for {url}: expected {want}, got {digest}"),
            ));
        }
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| step_error(step, e.to_string()))?;
        copy::set_times(&path, last_modified.unwrap_or(0), 0)
            .map_err(|e| step_error(step, e.to_string()))?;
        let d = Arc::new(Download {
            dir: tmp.path().to_path_buf(),
            name,
            digest,
            _tmp: tmp,
        });
        downloads.insert(url.to_string(), d.clone());
        Ok(d)
    }

    /// The filesystem a COPY --from or a mount reads.
    fn source_dir(&self, from: &Source, step: &Step) -> Result<SourceDir, BuildError> {
        Ok(match from {
            Source::Context => SourceDir::Plain(self.context(step)?.root().to_path_buf()),
            Source::Stage(p) => SourceDir::Layers(self.results.wait(*p)?.lowers()),
            Source::Image(r) => {
                let record = &self.images[r];
                let snaps = self.req.store.ensure_snapshots(record)?;
                SourceDir::Layers(snaps.iter().rev().map(|s| s.path.clone()).collect())
            }
        })
    }

    fn execute_run(
        &self,
        step: &Step,
        r: &RunStep,
        id: usize,
        run: &StageRun,
    ) -> Result<LayerRef, BuildError> {
        let pending = self.req.store.new_pending_snapshot()?;
        let scratch = self.scratch(step)?;
        for d in ["work", "mnt", "etc"] {
            std::fs::create_dir_all(scratch.path().join(d))
                .map_err(|e| step_error(step, e.to_string()))?;
        }
        let lowers = run_lowers(run);
        let (passwd, group) = read_from_layers(&lowers);
        let user = users::resolve_exec_user(&step.user, &passwd, &group)
            .map_err(|e| step_error(step, e.to_string()))?;
        let mut env = step.env.clone();
        env.extend(r.proxy_env.iter().cloned());
        let mut mounts = Vec::new();
        let mut held = HeldForRun::default();
        for m in &r.mounts {
            self.run_mount(step, m, &scratch, &mut mounts, &mut env, &mut held)?;
        }
        if let Some(script) = &r.script {
            let path = scratch.path().join("script");
            std::fs::write(&path, &script.content).map_err(|e| step_error(step, e.to_string()))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| step_error(step, e.to_string()))?;
            mounts.push(sandbox::Mount::Bind {
                source: path,
                target: format!("/dev/pipes/{}", script.name),
                readonly: true,
            });
        }
        let chroot = chroot_isolation();
        let mountpoint = scratch.path().join("mnt");
        let copied = if chroot {
            mounts = copy_out_mounts(mounts, scratch.path()).map_err(|e| step_error(step, e))?;
            let mut state = copy_out(&lowers, &mountpoint).map_err(|e| step_error(step, e))?;
            for m in &mounts {
                if let sandbox::Mount::Bind { target, .. } | sandbox::Mount::Tmpfs { target, .. } =
                    m
                {
                    state.relax(target);
                }
            }
            Some(state)
        } else {
            None
        };
        let rootfs = if chroot {
            sandbox::RootFs {
                mountpoint: mountpoint.clone(),
                ..Default::default()
            }
        } else {
            sandbox::RootFs {
                lowers,
                upper: Some(pending.fs()),
                work: Some(scratch.path().join("work")),
                mountpoint: mountpoint.clone(),
            }
        };
        let spec = sandbox::ProcessSpec {
            args: r.args.clone(),
            env,
            cwd: step.workdir.clone(),
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            hostname: "buildkitsandbox".into(),
            network: self.network_for(r),
            rootfs,
            mounts,
            readonly_rootfs: false,
            scratch: scratch.path().join("etc"),
            chroot,
            ..Default::default()
        };
        let mut child = sandbox::spawn(
            &spec,
            std::process::Stdio::null(),
            std::process::Stdio::piped(),
            std::process::Stdio::piped(),
        )
        .map_err(|e| step_error(step, oci::error_chain(&e)))?;
        let tail = Mutex::new(Tail::default());
        let status = std::thread::scope(|scope| {
            let readers: Vec<Box<dyn Read + Send>> = [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ]
            .into_iter()
            .flatten()
            .collect();
            for reader in readers {
                let tail = &tail;
                scope.spawn(move || {
                    let mut reader = BufReader::new(reader);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                        tail.lock().unwrap_or_else(|p| p.into_inner()).push(&line);
                        self.req.progress.event(ProgressEvent::Log {
                            id,
                            data: line.clone(),
                        });
                        line.clear();
                    }
                });
            }
            child.wait()
        })
        .map_err(|e| step_error(step, e.to_string()))?;
        let code = sandbox::exit_code(status);
        if code != 0 {
            let tail = tail.into_inner().unwrap_or_else(|p| p.into_inner());
            let cmd = r.args.join(" ");
            let mut message =
                format!("process \"{cmd}\" did not complete successfully: exit code: {code}");
            if !tail.lines.is_empty() {
                message.push_str("\n  last output:\n");
                for l in &tail.lines {
                    message.push_str("    ");
                    message.push_str(l.trim_end());
                    message.push('\n');
                }
            }
            return Err(step_error(step, message.trim_end().to_string()));
        }
        if let Some(state) = copied {
            state
                .write_upper(&mountpoint, &pending.fs())
                .map_err(|e| step_error(step, format!("recording the changes: {e}")))?;
        }
        self.commit(run, pending, true)
    }

    /// Adds one `RUN --mount` to the sandbox spec.
    fn run_mount(
        &self,
        step: &Step,
        m: &plan::RunMount,
        scratch: &tempfile::TempDir,
        mounts: &mut Vec<sandbox::Mount>,
        env: &mut Vec<String>,
        held: &mut HeldForRun,
    ) -> Result<(), BuildError> {
        match m.kind {
            MountType::Tmpfs => mounts.push(sandbox::Mount::Tmpfs {
                target: m.target.clone(),
                size_bytes: m.size_limit.map(|s| s.max(0) as u64),
                mode: None,
            }),
            MountType::Cache => match &m.from {
                None => {
                    let (dir, lock) = self.cache_mount_dir(step, m, None)?;
                    held.locks.extend(lock);
                    mounts.push(sandbox::Mount::Bind {
                        source: dir,
                        target: m.target.clone(),
                        readonly: m.read_only,
                    });
                }
                Some(from) => {
                    // As in BuildKit, a seeded cache is a writable layer over its `from=`
                    // content, kept per (id, content): an overlay whose upper directory
                    // persists in the store.
                    let lowers = self.mount_lowers(step, from, scratch, mounts.len())?;
                    let seed = self.mount_from_identity(m)?;
                    let (dir, lock) = self.cache_mount_dir(step, m, Some(&seed))?;
                    held.locks.extend(lock);
                    let (upper, work) = (dir.join("upper"), dir.join("work"));
                    for d in [&upper, &work] {
                        std::fs::create_dir_all(d).map_err(|e| step_error(step, e.to_string()))?;
                    }
                    mounts.push(sandbox::Mount::Layers {
                        lowers,
                        upper: Some((upper, work)),
                        source: m.source.clone().unwrap_or_default(),
                        target: m.target.clone(),
                        readonly: m.read_only,
                    });
                }
            },
            MountType::Secret => {
                let id = m.id.clone().unwrap_or_default();
                let Some(src) = self.req.secrets.get(&id) else {
                    if m.required {
                        return Err(step_error(
                            step,
                            format!(
                                "secret {id} not found: pass it with --secret id={id},src=FILE"
                            ),
                        ));
                    }
                    return Ok(());
                };
                let data = std::fs::read(src)
                    .map_err(|e| step_error(step, format!("reading secret {id}: {e}")))?;
                if let Some(var) = &m.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&data)));
                    if m.target.is_empty()
                        || m.target.starts_with("/run/secrets/") && m.env.is_some()
                    {
                        return Ok(());
                    }
                }
                let path = scratch.path().join(format!("secret-{}", mounts.len()));
                std::fs::write(&path, &data).map_err(|e| step_error(step, e.to_string()))?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(m.mode.unwrap_or(0o400)),
                )
                .map_err(|e| step_error(step, e.to_string()))?;
                std::os::unix::fs::chown(&path, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))
                    .map_err(|e| step_error(step, e.to_string()))?;
                mounts.push(sandbox::Mount::Bind {
                    source: path,
                    target: m.target.clone(),
                    readonly: true,
                });
            }
            MountType::Bind => {
                // Every bind goes through an overlay of its source: `source=` then resolves
                // inside it (no symlink reaches the host), and a writable (`rw`) bind writes
                // into a throwaway upper directory instead of the context or a snapshot.
                let from = m.from.as_ref().unwrap_or(&Source::Context);
                let lowers = self.mount_lowers(step, from, scratch, mounts.len())?;
                let upper = if m.read_only {
                    None
                } else {
                    let n = mounts.len();
                    let (u, w) = (
                        scratch.path().join(format!("rw-{n}")),
                        scratch.path().join(format!("rw-work-{n}")),
                    );
                    for d in [&u, &w] {
                        std::fs::create_dir_all(d).map_err(|e| step_error(step, e.to_string()))?;
                    }
                    Some((u, w))
                };
                mounts.push(sandbox::Mount::Layers {
                    lowers,
                    upper,
                    source: m.source.clone().unwrap_or_default(),
                    target: m.target.clone(),
                    readonly: m.read_only,
                });
            }
            MountType::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let Some(agent) = self.req.ssh.get(&id) else {
                    if m.required {
                        return Err(step_error(
                            step,
                            format!(
                                "no SSH agent {id} forwarded: pass it with --ssh {id}[=SOCKET]"
                            ),
                        ));
                    }
                    return Ok(());
                };
                let socket = scratch.path().join(format!("ssh-{}", mounts.len()));
                let owner = (m.uid.unwrap_or(0), m.gid.unwrap_or(0));
                let proxy = ssh::AgentProxy::start(&socket, agent, owner, m.mode.unwrap_or(0o600))
                    .map_err(|e| step_error(step, format!("SSH agent {id}: {e}")))?;
                held.agents.push(proxy);
                // As BuildKit does: the first agent is the default one, unless the
                // environment already names one.
                if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    env.push(format!("SSH_AUTH_SOCK={}", m.target));
                }
                mounts.push(sandbox::Mount::Bind {
                    source: socket,
                    target: m.target.clone(),
                    readonly: false,
                });
            }
        }
        Ok(())
    }

    /// The layers (top first) a mount's `from=` shows; the context comes with a mask that
    /// hides what `.dockerignore` excludes.
    fn mount_lowers(
        &self,
        step: &Step,
        from: &Source,
        scratch: &tempfile::TempDir,
        n: usize,
    ) -> Result<Vec<PathBuf>, BuildError> {
        Ok(match from {
            Source::Context => {
                let ctx = self.context(step)?;
                let mask = scratch.path().join(format!("ignore-{n}"));
                if ctx.write_ignore_mask(&mask)? {
                    vec![mask, ctx.root().to_path_buf()]
                } else {
                    vec![ctx.root().to_path_buf()]
                }
            }
            Source::Stage(p) => self.results.wait(*p)?.lowers(),
            Source::Image(r) => {
                let snaps = self.req.store.ensure_snapshots(&self.images[r])?;
                snaps.iter().rev().map(|s| s.path.clone()).collect()
            }
        })
    }

    /// A cache mount's directory under the store, created on first use with the requested
    /// owner and mode; a cache seeded from other content (`seed`, its identity) is a
    /// different cache for each content. `sharing=locked` holds a lock for the step;
    /// `private` takes a fresh directory when another step holds the shared one. A seeded
    /// cache is an overlay upper directory, which two mounts must not share at once, so its
    /// `shared` is `locked`.
    fn cache_mount_dir(
        &self,
        step: &Step,
        m: &plan::RunMount,
        seed: Option<&str>,
    ) -> Result<(PathBuf, Option<std::fs::File>), BuildError> {
        let id = m.id.clone().unwrap_or_default();
        let base = self.req.store.root().join("cache-v1").join("mounts");
        let key = match seed {
            None => id.clone(),
            Some(seed) => format!("{id}:{seed}"),
        };
        let dir = base.join(Digest::of(key.as_bytes()).hex());
        let io = |e: std::io::Error| step_error(step, format!("cache mount {id}: {e}"));
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io)?;
            std::fs::set_permissions(
                &dir,
                std::os::unix::fs::PermissionsExt::from_mode(m.mode.unwrap_or(0o755)),
            )
            .map_err(io)?;
            std::os::unix::fs::chown(&dir, Some(m.uid.unwrap_or(0)), Some(m.gid.unwrap_or(0)))
                .map_err(io)?;
        }
        let sharing = match m.sharing.unwrap_or(dockerfile::CacheSharing::Shared) {
            dockerfile::CacheSharing::Shared if seed.is_some() => dockerfile::CacheSharing::Locked,
            sharing => sharing,
        };
        if sharing == dockerfile::CacheSharing::Shared {
            return Ok((dir, None));
        }
        let lock_path = dir.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        if sharing == dockerfile::CacheSharing::Locked {
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| io(e.into()))?;
            return Ok((dir, Some(lock)));
        }
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok((dir, Some(lock))),
            Err(_) => {
                let private = tempfile::Builder::new()
                    .prefix("cache-private-")
                    .tempdir_in(self.req.store.tmp_dir())
                    .map_err(io)?;
                Ok((private.keep(), None))
            }
        }
    }

    /// `--squash`: the build's layers replayed onto one overlay-format snapshot (deletions
    /// inside the build vanish, deletions of base files stay whiteouts), on top of the
    /// untouched base layers. `--squash-all`: one flattened layer. History keeps every
    /// instruction; all but the last layer-making entry become `empty_layer`.
    fn squash(&self, target: &StageResult) -> Result<StageResult, BuildError> {
        let keep = match self.req.squash {
            Squash::No => return Ok(target.clone()),
            Squash::Build => target.base_layers,
            Squash::All => 0,
        };
        let squashed = &target.layers[keep..];
        if squashed.len() <= 1 {
            return Ok(target.clone());
        }
        let pending = self.req.store.new_pending_snapshot()?;
        let mode = if keep == 0 {
            layer::ApplyMode::Flatten
        } else {
            layer::ApplyMode::Squash
        };
        for l in squashed {
            let blob = BufReader::with_capacity(1 << 20, self.req.store.open_blob(&l.blob.digest)?);
            layer::apply(blob, &pending.fs(), mode).map_err(|e| {
                BuildError::Other(format!(
                    "squashing layer {}: {}",
                    l.blob.digest,
                    oci::error_chain(&e)
                ))
            })?;
        }
        let base = StageRun {
            key: target.key.clone(),
            layers: target.layers[..keep].to_vec(),
            history: Vec::new(),
            base_layers: keep,
            base_history: 0,
        };
        let layer = self.commit(&base, pending, keep > 0)?;
        let mut history = target.history.clone();
        let first = if keep == 0 { 0 } else { target.base_history };
        let last_layer_entry = history.iter().rposition(|h| !h.empty_layer);
        for (i, h) in history.iter_mut().enumerate().skip(first) {
            if Some(i) != last_layer_entry {
                h.empty_layer = true;
            }
        }
        let mut layers = base.layers;
        layers.push(layer);
        Ok(StageResult {
            key: target.key.clone(),
            layers,
            history,
            base_layers: keep,
            base_history: target.base_history,
        })
    }

    /// The image: the target's layers and history, the plan's config, `created` from the
    /// last history entry.
    fn assemble(&self, target: &StageResult) -> Result<BuildOutput, BuildError> {
        let stage = &self.plan.stages[self.plan.target];
        let mut config = stage.config.clone();
        let mut history = target.history.clone();
        fill_history_times(&mut history, &self.now()?);
        config.created = history.last().and_then(|h| h.created.clone());
        config.rootfs = oci::RootFs {
            kind: "layers".into(),
            diff_ids: target.layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        config.history = history;
        if !self.req.labels.is_empty() {
            let c = config.config.get_or_insert_with(Default::default);
            c.labels.extend(self.req.labels.clone());
        }
        let layers = target.layers.iter().map(|l| l.blob.clone()).collect();
        let descriptor = self.req.store.put_image(&config, layers)?;
        Ok(BuildOutput {
            descriptor,
            config,
            warnings: Vec::new(),
            cache_keys: Vec::new(),
        })
    }
}

enum SourceDir {
    Plain(PathBuf),
    Layers(Vec<PathBuf>),
}

/// Sources of one COPY/ADD read from the same place.
struct CopyGroup {
    dir: SourceDir,
    sources: Vec<String>,
    /// The build context: only what `.dockerignore` leaves is visible.
    context: bool,
    keep_owner: bool,
    unpack: bool,
}

/// A file `ADD` downloaded.
struct Download {
    dir: PathBuf,
    name: String,
    digest: Digest,
    _tmp: tempfile::TempDir,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name BuildKit gives a download: the URL path's last element, or `__unnamed__`.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "__unnamed__".to_string())
}

/// What a RUN's mounts hold until the step ends: cache locks and agent proxies.
#[derive(Default)]
struct HeldForRun {
    locks: Vec<std::fs::File>,
    agents: Vec<ssh::AgentProxy>,
}

fn excludes(c: &CopyStep) -> Result<Option<IgnoreMatcher>, String> {
    if c.excludes.is_empty() {
        return Ok(None);
    }
    IgnoreMatcher::new(c.excludes.iter())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The instruction of a COPY/ADD as it affects the result (everything but the sources' bytes).
fn copy_identity(c: &CopyStep) -> String {
    format!(
        "sources={:?} inline={:?} dest={} chown={:?} chmod={:?} link={} parents={} exclude={:?} checksum={:?} unpack={:?}",
        c.sources,
        c.inline
            .iter()
            .map(|f| (&f.name, &f.content))
            .collect::<Vec<_>>(),
        c.dest,
        c.chown,
        c.chmod,
        c.link,
        c.parents,
        c.excludes,
        c.checksum,
        c.unpack
    )
}

fn next_chain(run: &StageRun, diff: &DiffId) -> ChainId {
    match run.layers.last() {
        None => ChainId(diff.digest().clone()),
        Some(parent) => ChainId(Digest::of(format!("{} {}", parent.chain, diff).as_bytes())),
    }
}

/// Whether this process runs under the chroot isolation: no mounts, so every "root over
/// these snapshots" is a copy of them (the copying snapshotter, `layer::materialize`), and
/// what a step changed is found by comparing the copy with its recorded state.
fn chroot_isolation() -> bool {
    sandbox::isolation::current() == sandbox::isolation::Isolation::Chroot
}

/// Copies a stack of snapshots (top first) into `dest` (made here) and records its state.
fn copy_out(lowers: &[PathBuf], dest: &Path) -> Result<layer::TreeState, String> {
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let refs: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    layer::materialize(&refs, dest).map_err(|e| format!("copying the layers out: {e}"))?;
    layer::TreeState::record(dest).map_err(|e| e.to_string())
}

/// [`Solver::with_dest`] under the chroot isolation: the stage's layers (and each source
/// made of layers) copied into plain directories, `work` run chrooted there in a forked
/// process, and the changes written into `upper` in overlay format.
#[allow(clippy::too_many_arguments)]
fn with_copied_dest<T, F, G>(
    lowers: &[PathBuf],
    upper: &Path,
    mnt: &Path,
    scratch: &Path,
    link: bool,
    sources: &[&SourceDir],
    work: F,
    after: G,
) -> Result<(), String>
where
    F: FnOnce(Vec<std::os::fd::OwnedFd>) -> Result<T, String>,
    G: FnOnce(T) -> Result<(), String>,
{
    let mut source_dirs = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        source_dirs.push(match source {
            SourceDir::Plain(p) => p.clone(),
            SourceDir::Layers(l) => {
                let dir = scratch.join(format!("src{i}"));
                copy_out(l, &dir)?;
                dir
            }
        });
    }
    let (root, state) = if link {
        (upper.to_path_buf(), None)
    } else {
        (mnt.to_path_buf(), Some(copy_out(lowers, mnt)?))
    };
    sandbox::in_forked_process(|| {
        let mut src_fds = Vec::new();
        for p in &source_dirs {
            src_fds.push(SourceRoot::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?);
        }
        let guard =
            sandbox::enter_root(&root).map_err(|e| format!("entering the stage's root: {e}"))?;
        let result = work(src_fds);
        guard
            .leave()
            .map_err(|e| format!("leaving the stage's root: {e}"))?;
        after(result?)
    })
    .map_err(|e| format!("starting the copy process: {e}"))??;
    if let Some(state) = state {
        state
            .write_upper(mnt, upper)
            .map_err(|e| format!("recording the changes: {e}"))?;
    }
    Ok(())
}

/// A RUN's mounts under the chroot isolation: each mount of layers (another stage, an image,
/// the context under its ignore mask, a seeded cache) becomes a copy of them in the scratch
/// directory, moved into the root for the step; its writes are discarded, so a seeded cache
/// does not persist there. `source=` must resolve inside the copy.
fn copy_out_mounts(
    mounts: Vec<sandbox::Mount>,
    scratch: &Path,
) -> Result<Vec<sandbox::Mount>, String> {
    let mut out = Vec::with_capacity(mounts.len());
    for (i, m) in mounts.into_iter().enumerate() {
        let sandbox::Mount::Layers {
            mut lowers,
            upper,
            source,
            target,
            readonly,
        } = m
        else {
            out.push(m);
            continue;
        };
        if let Some((upper, _)) = upper {
            lowers.insert(0, upper);
        }
        let dir = scratch.join(format!("mount-copy-{i}"));
        copy_out(&lowers, &dir)?;
        let inside = dir
            .join(source.trim_start_matches('/'))
            .canonicalize()
            .map_err(|e| format!("the mount source {source}: {e}"))?;
        let top = dir.canonicalize().map_err(|e| e.to_string())?;
        if !inside.starts_with(&top) {
            return Err(format!(
                "the mount source {source} leads outside its root through a symlink, which \
                 --isolation chroot cannot resolve inside it"
            ));
        }
        out.push(sandbox::Mount::Bind {
            source: inside,
            target,
            readonly,
        });
    }
    Ok(out)
}

fn run_lowers(run: &StageRun) -> Vec<PathBuf> {
    run.layers
        .iter()
        .rev()
        .map(|l| l.snapshot.clone())
        .collect()
}

/// `/etc/passwd` and `/etc/group` of the current root (inside a chrooted copy thread).
fn read_user_files() -> (String, String) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    (read("/etc/passwd"), read("/etc/group"))
}

/// `/etc/passwd` and `/etc/group` of a layer stack, read without mounting: the topmost layer
/// that has the file wins, unless a whiteout hides it.
fn read_from_layers(lowers: &[PathBuf]) -> (String, String) {
    let read = |rel: &str| {
        for dir in lowers {
            let path = dir.join(rel);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) => {
                    return String::new();
                }
                Ok(_) => return std::fs::read_to_string(&path).unwrap_or_default(),
                Err(_) => {
                    if layer::is_opaque(&dir.join("etc")) {
                        return String::new();
                    }
                }
            }
        }
        String::new()
    };
    (read("etc/passwd"), read("etc/group"))
}

/// Metadata-only history entries take the time of the layer before them (the first ones,
/// of the layer after), as BuildKit's exporter does; with no layer at all, `now`.
fn fill_history_times(history: &mut [History], now: &str) {
    let mut last: Option<String> = None;
    for h in history.iter_mut() {
        match &h.created {
            Some(c) => last = Some(c.clone()),
            None => h.created = last.clone(),
        }
    }
    let first_known = history
        .iter()
        .find_map(|h| h.created.clone())
        .unwrap_or_else(|| now.to_string());
    for h in history.iter_mut().filter(|h| h.created.is_none()) {
        h.created = Some(first_known.clone());
    }
}

fn display_ref(r: &str, record: &ImageRecord) -> String {
    let name = oci::Reference::parse(r)
        .map(|r| r.name())
        .unwrap_or_else(|_| r.to_string());
    format!("{name}@{}", record.manifest_digest())
}

/// An instruction as shown in progress: continuation lines folded.
fn display_source(source: &str) -> String {
    let folded: Vec<&str> = source
        .lines()
        .map(|l| l.trim().trim_end_matches('\\').trim())
        .collect();
    folded.join(" ")
}

/// The last lines of a failed RUN's output, for the error message.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
}

impl Tail {
    const KEEP: usize = 10;

    fn push(&mut self, line: &[u8]) {
        if self.lines.len() == Self::KEEP {
            self.lines.pop_front();
        }
        self.lines
            .push_back(String::from_utf8_lossy(line).into_owned());
    }
}
