// The mtg-multi web panel: polls the API of the origin it came from (GET /stats, GET /secrets)
// and acts through it. No library, no build step, nothing from another origin.
'use strict';
(() => {
  const TEXT = {
    en: {
      language: 'Language', logout: 'Forget token', token: 'API token', signin: 'Open',
      token_note: 'The token is kept in this browser tab only.', wrong_token: 'The API refused the token.',
      traffic: 'Traffic', overview: 'Overview', throttle: 'Throttle', users: 'Users', filter: 'Filter',
      add_user: 'Add user', name: 'Name', connections: 'Connections', addresses: 'Addresses', up: 'Up',
      down: 'Down', rate: 'Now', quota: 'Quota', expires: 'Expires', limits: 'Limits', state: 'State',
      actions: 'Actions', host: 'Fronting host (generates a secret)', secret: 'or a secret',
      quota_reset: 'Quota resets', never: 'never', monthly: 'monthly', rate_limit: 'Rate limit',
      max_ips: 'Devices (addresses)', max_connections: 'Connections', disabled: 'Disabled',
      enabled: 'Active', save: 'Save', cancel: 'Cancel', close: 'Close', delete: 'Delete',
      edit: 'Edit', disable: 'Disable', enable: 'Enable', reset_quota: 'Reset quota', links: 'Links',
      copy: 'Copy', copied: 'Copied', total: 'Total', started: 'Started', uptime: 'Uptime',
      users_count: 'Users', live: 'Live connections', off: 'off', active: 'active', idle: 'not capping',
      limit: 'Limit', caps: 'Caps', resets: 'resets', expired: 'expired', updated: 'updated',
      new_user: 'New user', edit_user: 'Edit', confirm_delete: 'Delete user {name}? Its links stop working.',
      for_bot: 'Key for @MTProxybot', unlimited: '∞', per_s: '/s', capped: 'capped',
      up_down: '↑ from clients, ↓ to clients',
      fleet: 'Fleet', instance: 'Instance', seen: 'Seen', redis_down: 'Redis unreachable: counting locally',
    },
    ru: {
      language: 'Язык', logout: 'Забыть токен', token: 'Токен API', signin: 'Открыть',
      token_note: 'Токен хранится только в этой вкладке.', wrong_token: 'API не принял токен.',
      traffic: 'Трафик', overview: 'Обзор', throttle: 'Ограничение', users: 'Пользователи',
      filter: 'Фильтр', add_user: 'Добавить', name: 'Имя', connections: 'Соединения',
      addresses: 'Адреса', up: 'Отправлено', down: 'Получено', rate: 'Сейчас', quota: 'Квота',
      expires: 'Истекает', limits: 'Лимиты', state: 'Состояние', actions: 'Действия',
      host: 'Домен маскировки (создаст секрет)', secret: 'или секрет', quota_reset: 'Сброс квоты',
      never: 'никогда', monthly: 'ежемесячно', rate_limit: 'Скорость', max_ips: 'Устройства (адреса)',
      max_connections: 'Соединения', disabled: 'Отключён', enabled: 'Активен', save: 'Сохранить',
      cancel: 'Отмена', close: 'Закрыть', delete: 'Удалить', edit: 'Изменить', disable: 'Отключить',
      enable: 'Включить', reset_quota: 'Сбросить квоту', links: 'Ссылки', copy: 'Копировать',
      copied: 'Скопировано', total: 'Итого', started: 'Запущен', uptime: 'Работает',
      users_count: 'Пользователи', live: 'Живые соединения', off: 'выключено', active: 'активно',
      idle: 'не ограничивает', limit: 'Предел', caps: 'Ограничены', resets: 'сброс',
      expired: 'истёк', updated: 'обновлено', new_user: 'Новый пользователь', edit_user: 'Изменить',
      confirm_delete: 'Удалить пользователя {name}? Его ссылки перестанут работать.',
      for_bot: 'Ключ для @MTProxybot', unlimited: '∞', per_s: '/с', capped: 'ограничен',
      up_down: '↑ от клиентов, ↓ клиентам',
      fleet: 'Парк серверов', instance: 'Экземпляр', seen: 'Виден', redis_down: 'Redis недоступен: счёт локально',
    },
  };
  const HISTORY = 60;
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(250, Number(params.get('poll')) || 3000);
  const $ = (sel) => document.querySelector(sel);
  const store = { token: 'mtg-panel-token', lang: 'mtg-panel-lang' };

  let lang = localStorage.getItem(store.lang) ||
    ((navigator.language || 'en').toLowerCase().startsWith('ru') ? 'ru' : 'en');
  let stats = null;
  let fleet = null; // GET /stats?scope=cluster with [cluster] on, else null
  let secrets = {};
  let sort = { key: 'name', dir: 1 };
  let timer = null;
  let last = null; // the previous sample: {t, users: {name: [in, out]}}
  const totalHistory = [];
  const userHistory = {};
  const userRate = {};

  const t = (key) => (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;

  function applyLanguage() {
    document.documentElement.lang = lang;
    $('#lang').value = lang;
    document.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll('[data-i18n-placeholder]').forEach((el) => {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    });
    if (stats) render();
  }

  // --- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(store.token);
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit',
    });
    let json = null;
    try { json = await response.json(); } catch (_) { /* not JSON */ }
    if (!response.ok) {
      throw new ApiError(response.status, (json && json.error) || `HTTP ${response.status}`);
    }
    return json;
  }

  function showError(message) {
    const box = $('#error');
    box.textContent = message || '';
    box.hidden = !message;
  }

  function needToken(wrong) {
    clearTimeout(timer);
    $('#main').hidden = true;
    $('#login').hidden = false;
    $('#logout').hidden = true;
    showError(wrong ? t('wrong_token') : '');
    $('#token').focus();
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const [s, list, f] = await Promise.all([
        api('GET', '/stats'), api('GET', '/secrets'),
        // 404 without [cluster]: no fleet card.
        api('GET', '/stats?scope=cluster').catch((e) => { if (e.status === 404) return null; throw e; }),
      ]);
      stats = s;
      fleet = f;
      secrets = list || {};
      sample();
      $('#login').hidden = true;
      $('#main').hidden = false;
      $('#logout').hidden = !sessionStorage.getItem(store.token);
      if ($('#error').dataset.from === 'poll') { showError(''); delete $('#error').dataset.from; }
      render();
      $('#status').textContent = `${t('updated')} ${new Date().toLocaleTimeString(lang)}`;
      document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    } catch (e) {
      if (e.status === 401) { needToken(Boolean(sessionStorage.getItem(store.token))); return; }
      showError(e.message);
      $('#error').dataset.from = 'poll';
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // Bytes per second since the previous sample, for the whole proxy and each user.
  function sample() {
    const now = performance.now();
    const users = {};
    let rateIn = 0; let rateOut = 0;
    for (const [name, u] of Object.entries(stats.users || {})) {
      users[name] = [u.bytes_in, u.bytes_out];
      if (last && last.users[name]) {
        const dt = (now - last.t) / 1000;
        const r = [Math.max(0, u.bytes_in - last.users[name][0]) / dt,
          Math.max(0, u.bytes_out - last.users[name][1]) / dt];
        userRate[name] = r;
        rateIn += r[0]; rateOut += r[1];
        push(userHistory[name] || (userHistory[name] = []), r);
      }
    }
    if (last) push(totalHistory, [rateIn, rateOut]);
    last = { t: now, users };
  }

  function push(list, value) {
    list.push(value);
    while (list.length > HISTORY) list.shift();
  }

  // --- formatting ---------------------------------------------------------------------------

  function bytes(n) {
    if (n === undefined || n === null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0; let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
  }
  const rate = (n) => `${bytes(Math.round(n))}${t('per_s')}`;
  const date = (iso) => (iso ? iso.slice(0, 10) : '—');

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k.startsWith('data')) node.setAttribute(k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  // A sparkline of [up, down] pairs as inline SVG.
  function chart(points) {
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 100`);
    svg.setAttribute('preserveAspectRatio', 'none');
    const max = Math.max(1, ...points.map((p) => Math.max(p[0], p[1])));
    [0, 1].forEach((side) => {
      const line = document.createElementNS(ns, 'polyline');
      const offset = HISTORY - points.length;
      line.setAttribute('points', points.map((p, i) => `${i + offset},${(100 - (p[side] / max) * 96).toFixed(1)}`).join(' '));
      if (side === 1) line.setAttribute('class', 'down');
      svg.append(line);
    });
    return el('div', { class: 'chart' }, svg);
  }

  // --- rendering ----------------------------------------------------------------------------

  function rows() {
    const filter = $('#filter').value.trim().toLowerCase();
    const caps = (stats.throttle && stats.throttle.caps) || {};
    const list = Object.entries(stats.users || {}).map(([name, u]) => ({
      name, u, own: secrets[name] || {},
      connections: u.connections, ips: u.ips ?? -1, up: u.bytes_in, down: u.bytes_out,
      rate: (userRate[name] || [0, 0]).reduce((a, b) => a + b, 0),
      quota: u.quota ? (u.quota_used || 0) / u.quota : -1,
      expires: u.expires_at || '~', disabled: u.disabled ? 1 : 0, cap: caps[name],
    })).filter((r) => !filter || r.name.toLowerCase().includes(filter) ||
      (r.own.host || '').toLowerCase().includes(filter));
    list.sort((a, b) => {
      const x = a[sort.key]; const y = b[sort.key];
      return (x < y ? -1 : x > y ? 1 : a.name < b.name ? -1 : 1) * sort.dir;
    });
    return list;
  }

  function quotaCell(u) {
    if (!u.quota) return el('td', { text: t('unlimited'), dataValue: '' });
    const used = u.quota_used || 0;
    const share = Math.min(1, used / u.quota);
    const fill = el('div', { class: share >= 1 ? 'full' : share >= 0.8 ? 'warn' : '' });
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    return el('td', { class: 'quota', dataValue: `${used}/${u.quota}` },
      el('div', { class: 'bar', title: `${Math.round(share * 100)}%` }, fill),
      el('div', { class: 'small', text: `${bytes(used)} / ${bytes(u.quota)}` }),
      u.quota_resets_at ? el('div', { class: 'small', text: `${t('resets')} ${date(u.quota_resets_at)}` }) : null);
  }

  function limitsText(u) {
    const parts = [];
    if (u.rate_limit) parts.push(`${rate(u.rate_limit)} (${(u.rate_limit * 8 / 1e6).toFixed(1)} Mbit/s)`);
    if (u.max_ips) parts.push(`${t('max_ips')}: ${u.max_ips}`);
    if (u.max_connections) parts.push(`${t('max_connections')}: ${u.max_connections}`);
    return parts.length ? parts.join(' · ') : t('unlimited');
  }

  function render() {
    // Overview.
    const overview = $('#overview');
    overview.replaceChildren();
    const users = Object.keys(stats.users || {});
    for (const [k, v] of [
      ['started', stats.started_at ? new Date(stats.started_at).toLocaleString(lang) : '—'],
      ['uptime', duration(stats.uptime_seconds || 0)],
      ['users_count', String(users.length)],
      ['live', String(stats.total_connections)],
    ]) overview.append(el('dt', { text: t(k) }), el('dd', { text: v, dataField: k }));

    // Traffic of the whole proxy.
    const now = totalHistory.length ? totalHistory[totalHistory.length - 1] : [0, 0];
    $('#total-rate').textContent = `↑ ${rate(now[0])}  ↓ ${rate(now[1])}`;
    $('#total-rate').title = t('up_down');
    $('#total-chart').replaceChildren(chart(totalHistory).firstChild);

    // Throttle.
    const th = $('#throttle');
    th.replaceChildren();
    if (!stats.throttle) {
      th.append(el('span', { class: 'muted', text: t('off') }));
    } else {
      th.append(el('div', { text: `${stats.throttle.active ? t('active') : t('idle')} · ${t('limit')}: ${stats.throttle.limit}` }));
      const caps = Object.entries(stats.throttle.caps || {});
      if (caps.length) th.append(el('div', { class: 'small', text: `${t('caps')}: ${caps.map(([n, c]) => `${n} ≤ ${c}`).join(', ')}` }));
    }

    // The fleet (with [cluster]): every live instance's connections and traffic.
    const fl = $('#fleet');
    fl.hidden = !fleet;
    if (fleet) {
      const rowsOf = Object.entries(fleet.instances || {}).map(([name, i]) => el('tr', { dataInstance: name },
        el('td', { text: name + (name === fleet.instance ? ' ●' : '') }),
        el('td', { text: String(i.connections) }),
        el('td', { text: bytes(i.bytes_in) }),
        el('td', { text: bytes(i.bytes_out) }),
        el('td', { text: new Date(i.seen_at).toLocaleTimeString(lang) })));
      const tot = fleet.totals || {};
      $('#fleet-table').replaceChildren(
        el('thead', {}, el('tr', {}, ...['instance', 'connections', 'up', 'down', 'seen'].map((k) => el('th', { text: t(k) })))),
        el('tbody', {}, ...rowsOf),
        el('tfoot', {}, el('tr', {}, el('td', { text: t('total') }), el('td', { text: String(tot.connections || 0) }),
          el('td', { text: bytes(tot.bytes_in || 0) }), el('td', { text: bytes(tot.bytes_out || 0) }), el('td'))));
      $('#fleet-state').textContent = fleet.reachable ? '' : t('redis_down');
    }

    // Users.
    const body = el('tbody');
    const list = rows();
    let sum = { connections: 0, up: 0, down: 0, rate: 0 };
    for (const r of list) {
      const u = r.u;
      sum = { connections: sum.connections + r.connections, up: sum.up + r.up, down: sum.down + r.down, rate: sum.rate + r.rate };
      const expired = u.expires_at && new Date(u.expires_at) <= new Date();
      const actions = el('td', { class: 'actions' },
        el('button', { type: 'button', class: 'links', text: t('links'), onclick: () => openLinks(r.name) }), ' ',
        el('button', { type: 'button', class: 'edit', text: t('edit'), onclick: () => openEditor(r.name) }), ' ',
        el('button', { type: 'button', class: 'toggle', text: u.disabled ? t('enable') : t('disable'), onclick: () => toggle(r.name) }), ' ',
        u.quota ? el('button', { type: 'button', class: 'reset', text: t('reset_quota'), onclick: () => act('POST', `/secrets/${encodeURIComponent(r.name)}/reset-quota`) }) : null, ' ',
        el('button', { type: 'button', class: 'delete danger', text: t('delete'), onclick: () => askDelete(r.name) }));
      const rateNow = userRate[r.name] || [0, 0];
      body.append(el('tr', { dataUser: r.name },
        el('td', { class: 'name', text: r.name, title: r.own.host || '' }),
        el('td', { class: 'num connections', text: String(r.connections), dataValue: r.connections }),
        el('td', { class: 'num ips', text: u.ips === undefined ? '—' : `${u.ips}${u.max_ips ? ' / ' + u.max_ips : ''}`, dataValue: u.ips ?? '' }),
        el('td', { class: 'num up', text: bytes(r.up), dataValue: r.up }),
        el('td', { class: 'num down', text: bytes(r.down), dataValue: r.down }),
        el('td', { class: 'rate', title: t('up_down') },
          el('div', { class: 'small', text: `↑ ${rate(rateNow[0])} ↓ ${rate(rateNow[1])}` }), chart(userHistory[r.name] || [])),
        quotaCell(u),
        el('td', { class: 'expires' + (expired ? ' error-text' : ''), text: u.expires_at ? `${date(u.expires_at)}${expired ? ' (' + t('expired') + ')' : ''}` : '—' }),
        el('td', { class: 'limits small', text: limitsText(u) }),
        el('td', { class: 'state' }, el('span', { class: u.disabled ? 'tag off' : 'tag on', text: u.disabled ? t('disabled') : t('enabled') }),
          r.cap !== undefined ? el('div', { class: 'small', text: `${t('capped')} ≤ ${r.cap}` }) : null),
        actions));
    }
    $('#users tbody').replaceWith(body);
    $('#users tfoot').replaceChildren(el('tr', { class: 'total' },
      el('td', { text: `${t('total')} (${list.length})` }),
      el('td', { class: 'num connections', text: String(sum.connections), dataValue: sum.connections }),
      el('td'),
      el('td', { class: 'num up', text: bytes(sum.up), dataValue: sum.up }),
      el('td', { class: 'num down', text: bytes(sum.down), dataValue: sum.down }),
      el('td', { class: 'small', text: rate(sum.rate) }),
      el('td'), el('td'), el('td'), el('td'), el('td')));
    document.querySelectorAll('#users th[data-sort]').forEach((th2) => {
      th2.classList.toggle('asc', th2.dataset.sort === sort.key && sort.dir > 0);
      th2.classList.toggle('desc', th2.dataset.sort === sort.key && sort.dir < 0);
    });
  }

  function duration(s) {
    const d = Math.floor(s / 86400); const h = Math.floor((s % 86400) / 3600); const m = Math.floor((s % 3600) / 60);
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
  }

  // --- actions ------------------------------------------------------------------------------

  async function act(method, path, body) {
    try {
      await api(method, path, body);
      showError('');
      await poll();
      return true;
    } catch (e) {
      if (e.status === 401) { needToken(true); return false; }
      showError(e.message);
      return false;
    }
  }

  // The fields POST /secrets takes for a user as GET /secrets shows it (its own limits and tag).
  function ownFields(name) {
    const own = secrets[name] || {};
    const body = { name };
    for (const k of ['ad_tag', 'quota', 'quota_reset', 'expires', 'disabled', 'max_ips', 'max_connections', 'rate_limit']) {
      if (own[k] !== undefined) body[k] = own[k];
    }
    return body;
  }

  async function toggle(name) {
    // The current fields, not the last poll's: a change made a moment ago must not be undone.
    try { secrets = (await api('GET', '/secrets')) || {}; } catch (e) { showError(e.message); return false; }
    if (!secrets[name]) return poll();
    const body = ownFields(name);
    if (secrets[name].disabled) delete body.disabled; else body.disabled = true;
    return act('POST', '/secrets', body);
  }

  function askDelete(name) {
    const dialog = $('#confirm');
    $('#confirm-text').textContent = t('confirm_delete').replace('{name}', name);
    dialog.dataset.user = name;
    dialog.showModal();
  }

  let editing = null;
  const field = (k) => $('#editor-form').elements.namedItem(k);
  function openEditor(name) {
    editing = name || null;
    const form = $('#editor-form');
    form.reset();
    $('#editor-error').hidden = true;
    $('#editor-title').textContent = name ? `${t('edit_user')}: ${name}` : t('new_user');
    field('name').readOnly = Boolean(name);
    form.querySelectorAll('.new-only').forEach((n) => { n.hidden = Boolean(name); });
    if (name) {
      const own = secrets[name] || {};
      field('name').value = name;
      for (const k of ['quota', 'expires', 'rate_limit', 'max_ips', 'max_connections']) {
        field(k).value = own[k] === undefined ? '' : String(own[k]);
      }
      field('quota_reset').value = own.quota_reset || '';
      field('disabled').checked = Boolean(own.disabled);
    }
    $('#editor').showModal();
  }

  async function saveEditor() {
    const form = $('#editor-form');
    const body = editing ? ownFields(editing) : { name: field('name').value.trim() };
    for (const k of ['quota', 'quota_reset', 'expires', 'rate_limit', 'max_ips', 'max_connections', 'disabled']) delete body[k];
    const text = (k) => field(k).value.trim();
    if (!editing) {
      if (text('secret')) body.secret = text('secret'); else body.host = text('host');
    }
    for (const k of ['quota', 'rate_limit']) if (text(k)) body[k] = /^\d+$/.test(text(k)) ? Number(text(k)) : text(k);
    for (const k of ['max_ips', 'max_connections']) if (text(k)) body[k] = Number(text(k));
    if (text('expires')) body.expires = text('expires');
    if (field('quota_reset').value) body.quota_reset = field('quota_reset').value;
    if (field('disabled').checked) body.disabled = true;
    try {
      await api('POST', '/secrets', body);
      showError('');
      await poll();
      $('#editor').close();
    } catch (e) {
      if (e.status === 401) { $('#editor').close(); needToken(true); return; }
      const box = $('#editor-error');
      box.textContent = e.message;
      box.hidden = false;
      box.scrollIntoView({ block: 'nearest' });
    }
  }

  async function copy(text, button) {
    try {
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
      else {
        const area = el('textarea', {}, text);
        document.body.append(area); area.select(); document.execCommand('copy'); area.remove();
      }
      button.textContent = t('copied');
    } catch (_) { /* the link stays visible for copying by hand */ }
    setTimeout(() => { button.textContent = t('copy'); }, 1500);
  }

  function svgNode(text) {
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    const root = doc.documentElement;
    return root && root.localName === 'svg' ? document.importNode(root, true) : el('span', { text: '?' });
  }

  async function openLinks(name) {
    const dialog = $('#links');
    const box = $('#links-body');
    $('#links-title').textContent = `${t('links')}: ${name}`;
    box.replaceChildren();
    dialog.dataset.user = name;
    dialog.showModal();
    try {
      const data = await api('GET', `/secrets/${encodeURIComponent(name)}/links`);
      for (const l of data.links) {
        const qrs = el('div', { class: 'qrs' });
        for (const [url, qr, kind] of [[l.tg_url, l.tg_qr, 'tg'], [l.tme_url, l.tme_qr, 'tme']]) {
          const button = el('button', { type: 'button', class: 'copy', text: t('copy') });
          button.addEventListener('click', () => copy(url, button));
          box.append(el('div', { class: 'link', dataKind: kind, dataFamily: l.family },
            el('code', { class: 'url', text: url }), el('div', {}, button)));
          qrs.append(el('figure', { class: 'qr', dataKind: kind, dataFamily: l.family, title: url }, svgNode(qr),
            el('figcaption', { class: 'small', text: `${kind === 'tg' ? 'tg://' : 't.me'} · ${l.ip}` })));
        }
        box.append(qrs);
      }
      box.append(el('p', { class: 'small', text: `${t('for_bot')}: ${data.secret_for_mtproxybot}` }));
      dialog.dataset.loaded = 'yes';
    } catch (e) {
      box.append(el('div', { class: 'error', text: e.message }));
    }
  }

  // --- wiring -------------------------------------------------------------------------------

  function start() {
    $('#lang').addEventListener('change', (e) => {
      lang = e.target.value;
      localStorage.setItem(store.lang, lang);
      applyLanguage();
    });
    $('#login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(store.token, $('#token').value);
      $('#token').value = '';
      showError('');
      poll();
    });
    $('#logout').addEventListener('click', () => {
      sessionStorage.removeItem(store.token);
      needToken(false);
    });
    $('#filter').addEventListener('input', () => stats && render());
    document.querySelectorAll('#users th[data-sort]').forEach((th) => th.addEventListener('click', () => {
      sort = { key: th.dataset.sort, dir: sort.key === th.dataset.sort ? -sort.dir : 1 };
      render();
    }));
    $('#add').addEventListener('click', () => openEditor(null));
    $('#editor-save').addEventListener('click', saveEditor);
    $('#editor-cancel').addEventListener('click', () => $('#editor').close());
    $('#links-close').addEventListener('click', () => { $('#links').close(); delete $('#links').dataset.loaded; });
    $('#confirm-no').addEventListener('click', () => $('#confirm').close());
    $('#confirm-yes').addEventListener('click', async () => {
      const name = $('#confirm').dataset.user;
      $('#confirm').close();
      await act('DELETE', `/secrets/${encodeURIComponent(name)}`);
    });
    applyLanguage();
    poll();
  }

  start();
})();
