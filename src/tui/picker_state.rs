//! The picker's state apart from its drawing (`picker.rs`): the experiments as edited, the
//! cursor, the choices on offer, and how a key changes a field.

use std::ops::RangeInclusive;

use super::{Backend, ExperimentChoice, RoleChoice};
use crate::model::device::DeviceProfile;
use crate::model::weights::Precision;
use crate::record::limits::MAX_TRIALS;

/// The choices the picker offers, read once from the backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub experiments: Vec<ExperimentChoice>,
    pub models: Vec<String>,
    pub devices: Vec<DeviceProfile>,
    pub precisions: Vec<Precision>,
}

impl Catalog {
    pub fn from_backend(backend: &dyn Backend) -> Catalog {
        Catalog {
            experiments: backend.experiments(),
            models: backend.models(),
            devices: backend.devices(),
            precisions: backend.precisions(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickerFocus {
    List,
    Fields,
}

/// One editable setting of the selected experiment. Roles count from 0 = inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Model(usize),
    Precision(usize),
    Device(usize),
    Trials,
    MaxNewTokens,
    Seed,
    /// Full or segment verification.
    Mode,
    /// Segment mode: layers each verifier challenges.
    ChallengeLayers,
}

/// The picker's cursor and the (possibly edited) experiments.
#[derive(Debug, Clone)]
pub struct PickerState {
    pub choices: Vec<ExperimentChoice>,
    pub selected: usize,
    pub focus: PickerFocus,
    /// Index into [`fields`] of the selected experiment.
    pub field: usize,
}

/// The settings of `choice` in the order the cursor visits them.
pub fn fields(choice: &ExperimentChoice) -> Vec<Field> {
    let roles = 1 + choice.verifiers.len();
    let role_fields =
        (0..roles).flat_map(|r| [Field::Model(r), Field::Precision(r), Field::Device(r)]);
    let segment = choice.segment_layers.map(|_| Field::ChallengeLayers);
    role_fields
        .chain([Field::Trials, Field::MaxNewTokens, Field::Seed, Field::Mode])
        .chain(segment)
        .collect()
}

fn role_mut(choice: &mut ExperimentChoice, role: usize) -> Option<&mut RoleChoice> {
    match role {
        0 => Some(&mut choice.inference),
        n => choice.verifiers.get_mut(n - 1),
    }
}

/// The option `delta` steps away from `current` in `options` (wrapping); a current value not
/// on offer (or none) steps to the first or last option.
fn cycle<T: PartialEq + Clone>(options: &[T], current: Option<&T>, delta: isize) -> Option<T> {
    if options.is_empty() {
        return None;
    }
    let count = options.len() as isize;
    let next = match options.iter().position(|option| Some(option) == current) {
        Some(index) => (index as isize + delta).rem_euclid(count),
        None if delta > 0 => 0,
        None => count - 1,
    };
    Some(options[next as usize].clone())
}

/// Numbers typed into a field stop here, so a held key cannot overflow.
const MAX_TYPED: u64 = 10_000_000;

/// The trial counts a run accepts: the picker holds a count to them, so the count shown is the
/// count that runs.
pub(super) const TRIALS: RangeInclusive<usize> = 1..=MAX_TRIALS;

/// The largest number a field takes by typing.
fn typed_limit(field: Field) -> u64 {
    match field {
        Field::Trials => *TRIALS.end() as u64,
        Field::ChallengeLayers => MAX_CHALLENGED_LAYERS as u64,
        _ => MAX_TYPED,
    }
}

/// Trials and new tokens within what a run accepts. Erasing every digit leaves a field empty
/// (0) while typing; the value settles when the cursor leaves the field or the run starts.
fn settle_numbers(choice: &mut ExperimentChoice) {
    choice.trials = choice.trials.clamp(*TRIALS.start(), *TRIALS.end());
    choice.max_new_tokens = choice.max_new_tokens.max(1);
    if let Some(layers) = &mut choice.segment_layers {
        *layers = (*layers).clamp(1, MAX_CHALLENGED_LAYERS);
    }
}

/// The most layers the picker lets a verifier challenge; a model with fewer layers refuses
/// the count when the run draws its first challenge, naming it.
const MAX_CHALLENGED_LAYERS: usize = 1024;

impl PickerState {
    pub fn new(choices: Vec<ExperimentChoice>) -> PickerState {
        PickerState {
            choices,
            selected: 0,
            focus: PickerFocus::List,
            field: 0,
        }
    }

    pub fn current(&self) -> Option<&ExperimentChoice> {
        self.choices.get(self.selected)
    }

    pub fn current_field(&self) -> Option<Field> {
        self.current()
            .and_then(|choice| fields(choice).get(self.field).copied())
    }

    pub fn toggle_focus(&mut self) {
        self.settle_numbers();
        self.focus = match self.focus {
            PickerFocus::List => PickerFocus::Fields,
            PickerFocus::Fields => PickerFocus::List,
        };
    }

    /// Up/down: the experiment in the list, or the setting in the fields.
    pub fn move_cursor(&mut self, delta: isize) {
        self.settle_numbers();
        let (value, count) = match self.focus {
            PickerFocus::List => (&mut self.selected, self.choices.len()),
            PickerFocus::Fields => {
                let count = self.current().map_or(0, |choice| fields(choice).len());
                (&mut self.field, count)
            }
        };
        *value = value
            .saturating_add_signed(delta)
            .min(count.saturating_sub(1));
        if self.focus == PickerFocus::List {
            self.field = 0;
        }
    }

    /// Every experiment's numbers within what a run accepts (see [`settle_numbers`]).
    pub fn settle_numbers(&mut self) {
        self.choices.iter_mut().for_each(settle_numbers);
    }

    /// Left/right: the previous/next option, or a smaller/larger number.
    pub fn change_field(&mut self, delta: isize, catalog: &Catalog) {
        if self.focus != PickerFocus::Fields {
            return;
        }
        let Some(field) = self.current_field() else {
            return;
        };
        let Some(choice) = self.choices.get_mut(self.selected) else {
            return;
        };
        match field {
            Field::Model(role) | Field::Precision(role) | Field::Device(role) => {
                let Some(role) = role_mut(choice, role) else {
                    return;
                };
                match field {
                    Field::Model(_) => {
                        if let Some(next) = cycle(&catalog.models, Some(&role.model), delta) {
                            role.model = next;
                        }
                    }
                    Field::Precision(_) => {
                        let next = cycle(&catalog.precisions, role.precision.as_ref(), delta);
                        role.precision = next.or(role.precision);
                    }
                    _ => {
                        let next = cycle(&catalog.devices, role.device.as_ref(), delta);
                        role.device = next.or(role.device);
                    }
                }
            }
            Field::Trials => {
                let trials = choice.trials.saturating_add_signed(delta);
                choice.trials = trials.clamp(*TRIALS.start(), *TRIALS.end())
            }
            Field::MaxNewTokens => {
                choice.max_new_tokens = choice
                    .max_new_tokens
                    .saturating_add_signed(delta * 16)
                    .max(1)
            }
            Field::Seed => choice.seed = choice.seed.saturating_add_signed(delta as i64),
            Field::Mode => {
                choice.segment_layers = match choice.segment_layers {
                    Some(_) => None,
                    None => Some(crate::experiment::config::DEFAULT_CHALLENGED_LAYERS),
                }
            }
            Field::ChallengeLayers => {
                if let Some(layers) = &mut choice.segment_layers {
                    *layers = layers
                        .saturating_add_signed(delta)
                        .clamp(1, MAX_CHALLENGED_LAYERS);
                }
            }
        }
    }

    /// Digits typed on a number field append to it.
    pub fn type_digit(&mut self, digit: u8) {
        self.edit_number(|value, limit| (value * 10 + u64::from(digit)).min(limit));
    }

    pub fn erase_digit(&mut self) {
        self.edit_number(|value, _| value / 10);
    }

    /// `edit` gets the field's value and the largest it may become.
    fn edit_number(&mut self, edit: impl Fn(u64, u64) -> u64) {
        if self.focus != PickerFocus::Fields {
            return;
        }
        let Some(field) = self.current_field() else {
            return;
        };
        let Some(choice) = self.choices.get_mut(self.selected) else {
            return;
        };
        let limit = typed_limit(field);
        match field {
            Field::Trials => choice.trials = edit(choice.trials as u64, limit) as usize,
            Field::MaxNewTokens => {
                choice.max_new_tokens = edit(choice.max_new_tokens as u64, limit) as usize
            }
            Field::Seed => choice.seed = edit(choice.seed, limit),
            Field::ChallengeLayers => {
                if let Some(layers) = &mut choice.segment_layers {
                    *layers = edit(*layers as u64, limit) as usize;
                }
            }
            _ => {}
        }
    }
}
