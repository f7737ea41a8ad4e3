// The pages' words: one string table per language (Simplified Chinese first, English second),
// the language in force (localStorage choice, else the browser's navigator.languages, else
// Chinese), `t(key, vars)` for code, `data-i18n` / `data-i18n-title` attributes for HTML, a
// language switch for every page header, and times in the viewer's own time zone.
//
// A banner or label that must follow a language switch is written through `setText(el, key,
// vars)`: the key stays on the element (`data-i18n`, `data-i18n-vars`) and `applyI18n()`
// re-renders it. A var may itself be `{key, vars}` (translated at render time).
//
// tests/clients/test_i18n.py checks that both tables have the same keys, no empty strings, and
// that every key used in clients/web (t("..."), data-i18n="...") and every server reason, role,
// room kind and alarm kind has a text in both.

export const LANGUAGES = ["zh", "en"];
export const DEFAULT_LANGUAGE = "zh";
const STORAGE_KEY = "medstream.lang";
const LOCALES = { zh: "zh-CN", en: "en-GB" };

export const STRINGS = {
  zh: {
    "lang.label": "语言",
    "lang.zh": "中文",
    "lang.en": "English",

    "title.index": "medstream 远程医疗",
    "title.consultation": "远程会诊",
    "title.broadcast": "教学直播",
    "title.wall": "中央监护",
    "title.playback": "录像回放",
    "playback.loading": "正在载入录像…",
    "playback.no_access": "无权查看此录像：需要该会话主持人或督导的链接，或教学库授权",
    "playback.not_found": "找不到此录像",
    "playback.error": "录像无法播放，请联系技术支持",
    "playback.events": "事件",
    "playback.beats": "{n} 次心搏，其中室性 {v} 次",
    "btn.play": "播放",
    "btn.pause": "暂停",
    "tip.seek": "拖动以跳转：视频、声音和心电同步移动",
    "tip.timeline": "报警和参与者事件；点击跳转到该时刻",
    "event.joined": "{name} 加入",
    "event.left": "{name} 离开",
    "event.alarm": "{name}：报警 {label}",
    "event.alarm_cleared": "{name}：报警解除 {label}",
    "event.video_started": "{name} 开始视频",
    "event.audio_started": "{name} 开始音频",

    "state.idle": "未连接",
    "state.connecting": "正在连接",
    "state.joined": "已连接",
    "state.reconnecting": "正在重新连接",
    "state.closed": "已断开",
    "state.ended": "已结束",
    "state.no_media": "已连接 · 无音视频",

    "role.host": "主持人",
    "role.expert": "专家",
    "role.viewer": "观众",
    "role.speaker": "发言人",
    "role.monitor": "监护仪",
    "role.supervisor": "督导",
    "role.unknown": "参与者",
    "kind.consultation": "会诊",
    "kind.broadcast": "教学直播",
    "kind.monitoring": "监护",
    "kind.unknown": "会话",
    "room.line": "{kind}：{room} · {name}（{role}）",
    "you": "（我）",

    "panel.chat": "文字交流",
    "btn.send": "发送",
    "chat.placeholder": "输入消息，例如药名或剂量",
    "chat.placeholder_question": "向主讲人提问",
    "chat.question": "提问",
    "chat.not_sent": "消息未发送：连接中断，请稍后重试",
    "btn.share_screen": "共享屏幕",
    "btn.stop_sharing": "停止共享",
    "tip.share_screen": "把屏幕或影像（CT、超声、病理）作为第二路高清画面共享给所有人",
    "content.shared_by": "{name} 共享的画面",
    "err.share": "无法共享画面：{detail}",
    "btn.mute": "静音",
    "btn.unmute": "取消静音",
    "btn.cam_off": "关闭摄像头",
    "btn.cam_on": "打开摄像头",
    "btn.audio_only": "仅音频",
    "btn.record_start": "开始录制",
    "btn.record_stop": "停止录制",
    "btn.end_consultation": "结束会诊",
    "btn.end_broadcast": "结束直播",
    "btn.leave": "离开",
    "btn.raise_hand": "举手",
    "btn.lower_hand": "放下手",
    "btn.let_speak": "请他发言",
    "btn.back_to_audience": "回到观众席",
    "btn.ack": "确认 / 消音",
    "btn.enable_sound": "点击启用报警声音",
    "mod.mute": "静音",
    "mod.unmute": "取消静音",
    "mod.cam_off": "关摄像头",
    "mod.cam_on": "开摄像头",
    "mod.remove": "移出",
    "tip.mute": "关闭或打开你的麦克风",
    "tip.cam": "关闭或打开你的摄像头",
    "tip.audio_only": "不再接收视频（网络差时使用）",
    "video.weak_paused": "视频已暂停：网络较弱（声音继续，网络恢复后自动恢复）",
    "video.weak_reduced": "网络较弱：视频已降低帧率",
    "tip.ack": "确认全部报警，报警声音静音 2 分钟",
    "tip.rec_consultation": "录制期间，会诊中的每个人都能看到这个标志",
    "tip.rec_broadcast": "录制期间，每位观看者都能看到这个标志",
    "tip.quality": "连接质量",
    "tip.speaking": "说话",
    "label.mic": "麦克风",
    "label.camera": "摄像头",
    "device.mic_n": "麦克风 {n}",
    "device.cam_n": "摄像头 {n}",
    "rec.consultation": "录制中——本次会诊正在录制",
    "rec.broadcast": "录制中——本次直播正在录制",
    "confirm.end_consultation": "要为所有人结束本次会诊吗？",
    "confirm.end_broadcast": "要为所有人结束本次直播吗？",

    "flag.mic_muted_by_host": "麦克风已被主持人静音",
    "flag.cam_stopped_by_host": "摄像头已被主持人关闭",
    "flag.mic_off": "麦克风已关",
    "flag.cam_off": "摄像头已关",
    "flag.hand_raised": "已举手",
    "flag.reconnecting": "正在重新连接…",

    "quality.good": "良好",
    "quality.fair": "一般",
    "quality.poor": "差",
    "quality.unknown": "未知",
    "quality.no_media": "无音视频",
    "quality.connecting": "正在连接音视频",
    "quality.detail": "{grade} · {kbps} kbps · 丢包 {loss}% · {rtt} ms",
    "quality.mine": "你的网络：{kbps} kbps，丢包 {loss}%，延迟 {rtt} ms",

    "panel.patient_monitor": "病人监护",
    "panel.raised_hands": "举手",
    "panel.no_hands": "暂无举手。",
    "panel.speakers": "发言人",
    "panel.audience": "观众",
    "panel.on_stage": "台上",
    "audience.watching": "{n} 人观看",
    "hand.up": "举手",

    "banner.no_token": "此链接缺少访问令牌。请使用收到的完整链接打开本页（{page}.html?token=…）。",
    "banner.cannot_join": "无法加入：{reason}",
    "banner.disconnected": "连接已断开：{reason}",
    "banner.reconnecting": "网络中断，正在重新连接…",
    "banner.ended": "本次会话已结束：{reason}",
    "banner.left": "你已离开本次会话。关闭本页即可；如需重新加入，请重新打开链接。",
    "banner.removed": "主持人已将你移出本次会话。如有疑问，请联系主持人。",
    "banner.no_token_wall": "此链接缺少访问令牌。请使用收到的完整链接打开监护墙（wall.html?token=…）。",

    "media.connecting": "正在建立音视频连接…",
    "media.unreachable": "无法连接媒体服务器，听不到也看不到对方。请检查本机网络、防火墙或 TURN 中继设置；正在自动重试（第 {n} 次）。",
    "media.dropped": "音视频连接中断，正在重新连接（第 {n} 次）。如果一直无法恢复，请检查网络、防火墙或 TURN 中继设置。",
    "media.restored": "音视频已恢复。",

    "ended.ended_by_host": "主持人已结束本次会话。",
    "ended.empty": "所有人都已离开，会话自动结束。",
    "ended.booking_over": "预约时段已结束，会话自动结束。如需继续，请向预约人申请延长或新的预约。",
    "ended.ended_by_api": "平台已结束本次会话。",
    "ended.unknown": "会话已结束。",

    "bye.removed": "主持人已将你移出本次会话。",
    "bye.room_ended": "本次会话已结束。",
    "bye.left": "你已离开本次会话。",
    "bye.timeout": "你断线太久，已被移出。请重新打开链接加入。",
    "bye.unknown": "服务器关闭了连接。请重新打开链接；如果反复出现，请联系管理员。",

    "reason.bad_message": "页面发送了服务器无法识别的消息。请刷新页面后重试；如果反复出现，请联系管理员。",
    "reason.unsupported_version": "本页面版本与服务器不一致。请刷新页面（必要时清除浏览器缓存）。",
    "reason.message_too_large": "消息太大，服务器拒收。请刷新页面后重试。",
    "reason.rate_limited": "操作太频繁。请稍等片刻再试。",
    "reason.not_joined": "尚未加入会话。请刷新页面重新加入。",
    "reason.already_joined": "本连接已经加入了会话。请刷新页面。",
    "reason.invalid_token": "链接中的访问令牌无效（可能复制不完整）。请向预约人索取新的链接。",
    "reason.token_expired": "此链接已过期{when}。请向预约人索取新的链接。",
    "reason.token_not_yet_valid": "此链接尚未生效{when}。请到预约时间再打开；若时间已到，请检查本机时钟。",
    "reason.unknown_room": "找不到这个会话，可能尚未开始。请稍后再试，或向预约人确认链接。",
    "reason.room_full": "会话人数已满。请联系主持人。",
    "reason.room_ended": "这个会话已经结束。如需继续，请向预约人索取新的链接。",
    "reason.removed": "主持人已将你移出本次会话，不能再次加入。如确需加入，请联系主持人重新允许。",
    "reason.room_not_open": "会诊尚未开始（或预约时段已过）。请在预约时间前 10 分钟内再打开链接。",
    "reason.server_draining": "服务器正在维护重启，暂不接受新的加入。请稍后重新打开链接。",
    "reason.cluster_unavailable": "该房间在另一台服务器上，目前无法连接到集群。请稍后重试。",
    "reason.media_lost": "传送您音视频的服务器已离线，正在重新连接音视频。",
    "reason.forbidden": "你的角色不能执行这个操作。如有需要，请联系主持人。",
    "reason.unknown_participant": "该参与者已经不在会话中。",
    "reason.unknown_track": "该音视频已经不存在，可能对方已关闭。",
    "reason.invalid_sdp": "音视频协商失败。请刷新页面；如果反复出现，请换用最新版 Chrome 或 Firefox。",
    "reason.unsupported_codec": "本浏览器不支持所需的音视频编码。请换用最新版 Chrome 或 Firefox。",
    "reason.media_not_started": "音视频尚未启动。请稍等片刻再试。",
    "reason.recording_active": "正在录制中。",
    "reason.recording_inactive": "当前没有在录制。",
    "reason.recording_failed": "录制失败，已停止。请检查服务器磁盘空间后重新开始录制。",
    "reason.resume_failed": "无法恢复之前的连接，已作为新参与者重新加入。",
    "reason.internal": "服务器内部错误。请稍后重试；如果反复出现，请联系管理员。",
    "reason.local": "本机出错：{detail}",
    "reason.unknown": "发生错误。请刷新页面后重试；如果反复出现，请联系管理员。",
    "reason.closed_before_join": "无法连接服务器。请检查网络后刷新页面。",
    "when.at": "（{time}）",

    "err.publish": "无法打开摄像头和麦克风：{detail}",
    "err.camera_denied": "浏览器未允许使用摄像头或麦克风。请在地址栏的权限设置中允许后刷新页面。",
    "err.camera_missing": "找不到摄像头或麦克风。请检查设备是否连接好。",
    "err.camera_busy": "摄像头或麦克风正被其他程序占用。请关闭其他视频软件后重试。",

    "wall.alarms": "报警：",
    "wall.no_alarms": "无",
    "wall.waiting": "正在等待床旁监护仪传输数据…",
    "wall.ended": "会话已结束，波形已停止。",
    "sound.off": "报警声音未开启",
    "sound.on": "报警声音已开启",
    "sound.silenced": "已消音，至 {time}",

    "num.hr": "心率 次/分",
    "num.spo2": "血氧 %",
    "num.nibp": "无创血压 mmHg",
    "num.rr": "呼吸 次/分",
    "num.temp": "体温 °C",
    "lead.line": "{lead}  {speed} mm/s  {gain} mm/mV",

    "note.catching_up": "网络中断后正在补传：已补 {s} 秒",
    "note.lost": "{s} 秒信号丢失",
    "note.gap": "{s} 秒信号缺口，等待补传",
    "note.skipped": "网络慢，显示已跳到最新",
    "note.stream_ended": "信号已结束（{reason}）",
    "stream_ended.group_closed": "监护会话已结束",
    "stream_ended.new_segment": "监护仪已重新启动，继续记录为新的一段",
    "stream_ended.publisher_gone": "监护仪离线太久，数据流已关闭",
    "stream_ended.publisher_left": "监护仪已离线",
    "stream_ended.unknown": "监护仪停止发送",

    "alarm.asystole": "心脏停搏",
    "alarm.vf": "心室颤动/扑动",
    "alarm.vfl": "心室扑动",
    "alarm.vt": "室性心动过速",
    "alarm.ventricular_fibrillation": "心室颤动/扑动",
    "alarm.ventricular_tachycardia": "室性心动过速",
    "wall.latched": "已结束，未确认",
    "wall.alarm_history": "报警记录",
    "alarm.extreme_bradycardia": "极度心动过缓",
    "alarm.extreme_tachycardia": "极度心动过速",
    "alarm.bradycardia": "心动过缓",
    "alarm.tachycardia": "心动过速",
    "alarm.leads_off": "导联脱落",
    "alarm.saturation": "心电信号饱和",
    "alarm.noise": "心电干扰过大，无法分析",
    "alarm.cannot_analyze": "心电无法分析",
    "alarm.artifact": "心电伪差",
    "alarm.signal_loss": "心电信号丢失",
    "alarm.unknown": "报警",

    "index.tagline": "远程会诊、中央监护与教学直播的实时音视频和心电传输",
    "index.intro": "每个页面都要从带签名访问令牌的链接打开（?token=…）：令牌写明会话、你的角色和显示名称。链接由预约会诊的人生成（medstream token …），或由 medstream demo 打印。",
    "index.consultation_title": "远程会诊 — consultation.html",
    "index.consultation_text": "乡镇医生和上级专家互相看见、听见。可选择摄像头和麦克风、静音、关闭摄像头，网络差时可切换为“仅音频”。每个画面显示谁在说话以及连接质量。主持人可以静音或移出参与者、结束会诊、开始或停止录制；录制时所有人都能看到红色“录制中”标志。如果会诊中有床旁监护仪，下方显示心电波形。网络中断后会自动重连。",
    "index.broadcast_title": "教学直播 — broadcast.html",
    "index.broadcast_text": "教学查房和手术示教：主讲人画面最大，观众只接收。观众可以举手；主持人看到举手后可以请其发言（所有人都能听见、看见），之后再请其回到观众席。",
    "index.wall_title": "中央监护墙 — wall.html",
    "index.wall_text": "同时显示病区所有床旁监护仪：以 25 mm/s 在网格上绘制心电波形（带移动擦除条），显示心率和心搏标记、血氧、无创血压、呼吸和体温。报警按优先级着色（高级红色闪烁，中级黄色，低级青色），确认前持续发声。监护仪网络中断后，监护墙会提示正在补传。",
    "index.automation": "自动化测试和技术支持可通过 window.medstream 读取每个页面的状态（见 docs/clients.md）。",

    // 12-lead remote reading (ecg-clinic.html, ecg-reading.html, ecg12view.js)
    "title.ecg_clinic": "远程心电 · 基层上传",
    "title.ecg_reading": "心电诊断中心",
    "ecg12.live_connecting": "正在连接实时通知",
    "ecg12.live_on": "实时通知已连接",
    "ecg12.upload_title": "上传十二导联心电图",
    "ecg12.file": "心电文件",
    "ecg12.referral": "申请单号/就诊号",
    "ecg12.patient_id": "患者编号",
    "ecg12.patient_name": "姓名",
    "ecg12.sex": "性别",
    "ecg12.sex_u": "未填",
    "ecg12.sex_m": "男",
    "ecg12.sex_f": "女",
    "ecg12.age": "年龄（岁）",
    "ecg12.send": "发送至心电中心",
    "ecg12.upload_hint": "可上传 WFDB 记录（.hea 与 .dat/.mat 两个文件一起选）或心电图机导出的 DICOM 文件；采样率 250-1000 Hz，长度 8-60 秒。",
    "ecg12.my_requests": "本院的心电申请",
    "ecg12.rhythm": "心律：",
    "ecg12.findings": "所见：",
    "ecg12.conclusion": "结论：",
    "ecg12.signed_by": "{who} 于 {when} 签发",
    "ecg12.open_pdf": "打开报告（PDF）",
    "ecg12.join_consultation": "加入远程会诊",
    "ecg12.clinic_line": "机构：{clinic}",
    "ecg12.sending": "正在发送…",
    "ecg12.sent": "已发送，排队优先级：{priority}",
    "ecg12.not_sent": "未发送",
    "ecg12.consultation_opened": "{who} 发起了远程会诊",
    "ecg12.report_arrived": "申请 {referral} 的诊断报告已签发",
    "ecg12.queue": "待诊断",
    "ecg12.queue_empty": "目前没有待诊断的心电图",
    "ecg12.caliper_hint": "测量尺：在图上点击两点。",
    "ecg12.caliper": "间期 {ms} ms（{bpm} 次/分），电压差 {mv} mV",
    "ecg12.measurements": "自动测量",
    "ecg12.st_title": "各导联 ST 段与振幅（mV）",
    "ecg12.flags": "预警提示（非诊断）",
    "ecg12.flags_note": "自动测量和提示仅供参考，以医师判读为准。",
    "ecg12.report": "诊断报告",
    "ecg12.findings_hint": "所见（每行一条）",
    "ecg12.claim": "认领",
    "ecg12.save_draft": "保存草稿",
    "ecg12.sign": "签发报告",
    "ecg12.release": "退回队列",
    "ecg12.open_consultation": "发起远程会诊",
    "ecg12.rhythm_sinus": "窦性心律",
    "ecg12.rhythm_af": "心房颤动",
    "ecg12.rhythm_flutter": "心房扑动",
    "ecg12.rhythm_brady": "窦性心动过缓",
    "ecg12.rhythm_tachy": "窦性心动过速",
    "ecg12.rhythm_paced": "起搏心律",
    "ecg12.no_flags": "无提示",
    "ecg12.claimed_by": "{who} 正在判读",
    "ecg12.reader_line": "心电中心 {centre} · 医师 {who}",
    "ecg12.patient_line": "{sex}，{age} 岁",
    "ecg12.lead": "导联",
    "ecg12.st_j": "ST(J点)",
    "ecg12.st_j60": "ST(J+60毫秒)",
    "ecg12.r_amp": "R波",
    "ecg12.s_amp": "S波",
    "ecg12.claimed": "已认领",
    "ecg12.draft_saved": "草稿已保存",
    "ecg12.signed_done": "报告已签发，已通知申请机构",
    "ecg12.released": "已退回队列",
    "ecg12.scale_note": "走纸速度 {speed} 毫米/秒，增益 {gain} 毫米/毫伏",
    "ecg12.m.hr": "心率",
    "ecg12.m.rhythm": "节律",
    "ecg12.m.p": "P波时限",
    "ecg12.m.pr": "PR间期",
    "ecg12.m.qrs": "QRS时限",
    "ecg12.m.qt": "QT间期",
    "ecg12.m.qtcb": "QTc（Bazett公式）",
    "ecg12.m.qtcf": "QTc（Fridericia公式）",
    "ecg12.m.axis": "QRS电轴",
    "ecg12.regular": "规则",
    "ecg12.irregular": "不规则",
    "ecg12.no_p": "未见P波",
    "ecg12.wait_s": "已等 {s} 秒",
    "ecg12.wait_m": "已等 {m} 分 {s} 秒",
    "ecg12.wait_h": "已等 {h} 小时 {m} 分",
    "ecg12.consult_title": "本次会诊的十二导联心电图",
    "priority.stat": "疑似STEMI·立即",
    "priority.urgent": "紧急",
    "priority.flagged": "有提示",
    "priority.routine": "常规",
    "priority.unknown": "未分级",
    "rstate.queued": "排队中",
    "rstate.claimed": "判读中",
    "rstate.signed": "已签发",
    "rstate.unknown": "状态未知",
    "sex.m": "男",
    "sex.f": "女",
    "sex.u": "性别未填",
    "sex.unknown": "性别未填",
    "flag.st_elevation": "ST段抬高（疑似STEMI）",
    "flag.st_depression": "ST段压低",
    "flag.af_suspected": "疑似心房颤动",
    "flag.qtc_prolonged": "QTc延长",
    "flag.wide_qrs": "QRS波增宽",
    "flag.lbbb_pattern": "左束支传导阻滞图形",
    "flag.rbbb_pattern": "右束支传导阻滞图形",
    "flag.first_degree_av_block": "一度房室传导阻滞（PR>200毫秒）",
    "flag.unknown": "其他提示",
    "rerror.line": "{what}（{detail}）",
    "rerror.network": "无法连接服务器，请检查网络后重试。",
    "rerror.unknown": "操作未完成。",
    "rerror.not_found": "找不到该申请，或您无权查看。",
    "rerror.forbidden": "您的身份不能执行此操作。",
    "rerror.conflict": "该心电图已由其他医师认领。",
    "rerror.invalid_state": "该申请当前状态不允许此操作。",
    "rerror.invalid_input": "填写的内容有误，请检查。",
    "rerror.unauthorized": "链接缺少访问令牌，请使用完整链接。",
    "rerror.invalid_token": "访问令牌无效，请重新获取链接。",
    "rerror.token_expired": "此链接已过期，请重新获取链接。",
    "rerror.token_not_yet_valid": "此链接尚未生效。",
    "rerror.too_large": "文件太大。",
    "rerror.unsupported_media_type": "上传方式不受支持。",
    "rerror.invalid_ecg": "不是可用的十二导联心电图。",
    "rerror.not_measurable": "心电图无法测量（信号平直或心搏过少）。",
    "rerror.unsupported_file": "文件格式不受支持：请上传 WFDB（.hea + .dat）或 DICOM 心电文件。",
    "rerror.unavailable": "本服务器未开通此功能。",
    "rerror.internal": "服务器内部错误，请稍后重试并告知技术支持。",
  },

  en: {
    "lang.label": "Language",
    "lang.zh": "中文",
    "lang.en": "English",

    "title.index": "medstream telemedicine",
    "title.consultation": "Consultation",
    "title.broadcast": "Broadcast",
    "title.wall": "Monitoring wall",
    "title.playback": "Recording playback",
    "playback.loading": "Loading the recording…",
    "playback.no_access": "You may not see this recording: it needs a link of the session's host or supervisor, or a library grant",
    "playback.not_found": "This recording was not found",
    "playback.error": "The recording cannot be played; please call technical support",
    "playback.events": "Events",
    "playback.beats": "{n} beats, {v} of them ventricular",
    "btn.play": "Play",
    "btn.pause": "Pause",
    "tip.seek": "Drag to jump: video, sound and ECG move together",
    "tip.timeline": "Alarms and participant events; click to jump there",
    "event.joined": "{name} joined",
    "event.left": "{name} left",
    "event.alarm": "{name}: alarm {label}",
    "event.alarm_cleared": "{name}: alarm cleared {label}",
    "event.video_started": "{name} started video",
    "event.audio_started": "{name} started audio",

    "state.idle": "not connected",
    "state.connecting": "connecting",
    "state.joined": "joined",
    "state.reconnecting": "reconnecting",
    "state.closed": "disconnected",
    "state.ended": "ended",
    "state.no_media": "joined · no media",

    "role.host": "host",
    "role.expert": "expert",
    "role.viewer": "viewer",
    "role.speaker": "speaker",
    "role.monitor": "monitor",
    "role.supervisor": "supervisor",
    "role.unknown": "participant",
    "kind.consultation": "Consultation",
    "kind.broadcast": "Broadcast",
    "kind.monitoring": "Monitoring",
    "kind.unknown": "Session",
    "room.line": "{kind}: {room} · {name} ({role})",
    "you": " (you)",

    "panel.chat": "Chat",
    "btn.send": "Send",
    "chat.placeholder": "Type a message, e.g. a drug name or dose",
    "chat.placeholder_question": "Ask the presenter a question",
    "chat.question": "question",
    "chat.not_sent": "Message not sent: the connection dropped, try again in a moment",
    "btn.share_screen": "Share screen",
    "btn.stop_sharing": "Stop sharing",
    "tip.share_screen": "Share your screen or images (CT, ultrasound, pathology) as a second high-resolution picture for everyone",
    "content.shared_by": "Shared by {name}",
    "err.share": "Cannot share: {detail}",
    "btn.mute": "Mute",
    "btn.unmute": "Unmute",
    "btn.cam_off": "Camera off",
    "btn.cam_on": "Camera on",
    "btn.audio_only": "Audio only",
    "btn.record_start": "Start recording",
    "btn.record_stop": "Stop recording",
    "btn.end_consultation": "End consultation",
    "btn.end_broadcast": "End broadcast",
    "btn.leave": "Leave",
    "btn.raise_hand": "Raise hand",
    "btn.lower_hand": "Lower hand",
    "btn.let_speak": "Let speak",
    "btn.back_to_audience": "Back to audience",
    "btn.ack": "Acknowledge / silence",
    "btn.enable_sound": "Click to enable alarm sound",
    "mod.mute": "mute",
    "mod.unmute": "unmute",
    "mod.cam_off": "camera off",
    "mod.cam_on": "camera on",
    "mod.remove": "remove",
    "tip.mute": "Mute or unmute your microphone",
    "tip.cam": "Turn your camera off or on",
    "tip.audio_only": "Stop receiving video (weak connection)",
    "video.weak_paused": "Video paused: weak connection (sound continues; video returns when the link recovers)",
    "video.weak_reduced": "Weak connection: video at a lower frame rate",
    "tip.ack": "Acknowledge all alarms and silence the tone for 2 minutes",
    "tip.rec_consultation": "Everyone in this consultation sees this while it is recorded",
    "tip.rec_broadcast": "Everyone watching sees this while it is recorded",
    "tip.quality": "connection quality",
    "tip.speaking": "speaking",
    "label.mic": "Mic",
    "label.camera": "Camera",
    "device.mic_n": "microphone {n}",
    "device.cam_n": "camera {n}",
    "rec.consultation": "REC — this consultation is being recorded",
    "rec.broadcast": "REC — this broadcast is being recorded",
    "confirm.end_consultation": "End the consultation for everyone?",
    "confirm.end_broadcast": "End the broadcast for everyone?",

    "flag.mic_muted_by_host": "mic muted by host",
    "flag.cam_stopped_by_host": "camera stopped by host",
    "flag.mic_off": "mic off",
    "flag.cam_off": "camera off",
    "flag.hand_raised": "hand raised",
    "flag.reconnecting": "reconnecting…",

    "quality.good": "good",
    "quality.fair": "fair",
    "quality.poor": "poor",
    "quality.unknown": "unknown",
    "quality.no_media": "no media",
    "quality.connecting": "connecting media",
    "quality.detail": "{grade} · {kbps} kbps · {loss}% loss · {rtt} ms",
    "quality.mine": "your link: {kbps} kbps, {loss}% loss, {rtt} ms",

    "panel.patient_monitor": "Patient monitor",
    "panel.raised_hands": "Raised hands",
    "panel.no_hands": "No raised hands.",
    "panel.speakers": "Speakers",
    "panel.audience": "Audience",
    "panel.on_stage": "On stage",
    "audience.watching": "{n} watching",
    "hand.up": "hand up",

    "banner.no_token": "This link has no access token. Open this page from the complete link you were given ({page}.html?token=…).",
    "banner.cannot_join": "Cannot join: {reason}",
    "banner.disconnected": "Disconnected: {reason}",
    "banner.reconnecting": "Connection lost: reconnecting…",
    "banner.ended": "The session has ended: {reason}",
    "banner.left": "You left the session. You can close this page; open the link again to rejoin.",
    "banner.removed": "The host removed you from this session. Ask the host if this was a mistake.",
    "banner.no_token_wall": "This link has no access token. Open the wall from the complete link you were given (wall.html?token=…).",

    "media.connecting": "Connecting audio and video…",
    "media.unreachable": "Cannot reach the media server: no audio or video gets through. Check this computer's network, the firewall or the TURN relay settings. Retrying by itself (attempt {n}).",
    "media.dropped": "Audio and video dropped: reconnecting (attempt {n}). If it does not come back, check the network, the firewall or the TURN relay settings.",
    "media.restored": "Audio and video are back.",

    "ended.ended_by_host": "The host ended the session.",
    "ended.empty": "Everyone left, so the session ended.",
    "ended.booking_over": "The booked slot is over, so the session ended. Ask whoever booked it to extend it or book a new one.",
    "ended.ended_by_api": "The platform ended the session.",
    "ended.unknown": "The session has ended.",

    "bye.removed": "The host removed you from this session.",
    "bye.room_ended": "The session has ended.",
    "bye.left": "You left the session.",
    "bye.timeout": "You were away too long and were taken out. Open the link again to rejoin.",
    "bye.unknown": "The server closed the connection. Open the link again; if it keeps happening, tell the administrator.",

    "reason.bad_message": "The page sent something the server did not understand. Reload the page; if it keeps happening, tell the administrator.",
    "reason.unsupported_version": "This page does not match the server's version. Reload the page (clear the browser cache if needed).",
    "reason.message_too_large": "The message was too large for the server. Reload the page and try again.",
    "reason.rate_limited": "Too many actions at once. Wait a moment and try again.",
    "reason.not_joined": "Not joined yet. Reload the page to join.",
    "reason.already_joined": "This connection has already joined. Reload the page.",
    "reason.invalid_token": "The access token in this link is not valid (perhaps it was copied incompletely). Ask whoever booked the session for a new link.",
    "reason.removed": "The host removed you from this session; you cannot rejoin unless the host lets you back in.",
    "reason.room_not_open": "The consultation has not opened yet (or its booked slot is over). Open the link again within 10 minutes of the booked time.",
    "reason.server_draining": "The server is restarting for maintenance and takes no new joins. Open the link again in a moment.",
    "reason.cluster_unavailable": "This room is on another server and the cluster cannot be reached right now. Try again in a moment.",
    "reason.media_lost": "The server carrying your audio and video went away. Reconnecting your media.",
    "reason.token_expired": "This link has expired{when}. Ask whoever booked the session for a new link.",
    "reason.token_not_yet_valid": "This link is not valid yet{when}. Open it at the booked time; if that time has come, check this computer's clock.",
    "reason.unknown_room": "This session cannot be found; it may not have started yet. Try again later or check the link with whoever booked it.",
    "reason.room_full": "The session is full. Contact the host.",
    "reason.room_ended": "This session has already ended. Ask whoever booked it for a new link if it should go on.",
    "reason.forbidden": "Your role may not do this. Ask the host if you need it.",
    "reason.unknown_participant": "That participant is no longer in the session.",
    "reason.unknown_track": "That audio or video is gone; its owner may have turned it off.",
    "reason.invalid_sdp": "Audio and video negotiation failed. Reload the page; if it keeps happening, use a current Chrome or Firefox.",
    "reason.unsupported_codec": "This browser lacks the audio/video codec needed. Use a current Chrome or Firefox.",
    "reason.media_not_started": "Audio and video have not started yet. Wait a moment and try again.",
    "reason.recording_active": "Recording is already on.",
    "reason.recording_inactive": "Nothing is being recorded.",
    "reason.recording_failed": "Recording failed and stopped. Check the server's disk space, then start recording again.",
    "reason.resume_failed": "The earlier connection could not be resumed; you joined again as a new participant.",
    "reason.internal": "Something went wrong on the server. Try again later; if it keeps happening, tell the administrator.",
    "reason.local": "Problem on this computer: {detail}",
    "reason.unknown": "Something went wrong. Reload the page; if it keeps happening, tell the administrator.",
    "reason.closed_before_join": "Cannot reach the server. Check the network, then reload the page.",
    "when.at": " ({time})",

    "err.publish": "Cannot open camera and microphone: {detail}",
    "err.camera_denied": "The browser did not allow the camera or microphone. Allow them in the address bar's site settings, then reload.",
    "err.camera_missing": "No camera or microphone found. Check that they are plugged in.",
    "err.camera_busy": "Another program is using the camera or microphone. Close other video software and try again.",

    "wall.alarms": "Alarms:",
    "wall.no_alarms": "none",
    "wall.waiting": "Waiting for bedside monitors to stream…",
    "wall.ended": "The session has ended; the waveforms have stopped.",
    "sound.off": "Alarm sound is off",
    "sound.on": "Alarm sound on",
    "sound.silenced": "Silenced until {time}",

    "num.hr": "HR bpm",
    "num.spo2": "SpO₂ %",
    "num.nibp": "NIBP mmHg",
    "num.rr": "RR /min",
    "num.temp": "Temp °C",
    "lead.line": "{lead}  {speed} mm/s  {gain} mm/mV",

    "note.catching_up": "catching up after a drop: {s} s back-filled",
    "note.lost": "{s} s of signal lost",
    "note.gap": "gap of {s} s: waiting for back-fill",
    "note.skipped": "display skipped ahead (slow link)",
    "note.stream_ended": "signal ended ({reason})",
    "stream_ended.group_closed": "the monitoring session ended",
    "stream_ended.new_segment": "The monitor restarted: recording continues as a new segment",
    "stream_ended.publisher_gone": "The monitor was offline too long: its stream was closed",
    "stream_ended.publisher_left": "the monitor went offline",
    "stream_ended.unknown": "the monitor stopped sending",

    "alarm.asystole": "Asystole",
    "alarm.vf": "VF / VFL",
    "alarm.vfl": "Ventricular flutter",
    "alarm.vt": "Ventricular tachycardia",
    "alarm.ventricular_fibrillation": "VF / flutter",
    "alarm.ventricular_tachycardia": "V-tach",
    "wall.latched": "ended, not acknowledged",
    "wall.alarm_history": "Alarm history",
    "alarm.extreme_bradycardia": "Extreme bradycardia",
    "alarm.extreme_tachycardia": "Extreme tachycardia",
    "alarm.bradycardia": "Bradycardia",
    "alarm.tachycardia": "Tachycardia",
    "alarm.leads_off": "Leads off",
    "alarm.saturation": "ECG signal saturated",
    "alarm.noise": "ECG noise: cannot analyse",
    "alarm.cannot_analyze": "ECG cannot be analysed",
    "alarm.artifact": "ECG artefact",
    "alarm.signal_loss": "ECG signal lost",
    "alarm.unknown": "Alarm",

    "index.tagline": "real-time video and ECG streaming for telemedicine",
    "index.intro": "Each page is opened from a link that carries a signed access token (?token=...): the token names the room, your role and your display name. Links come from whoever books the session (medstream token ...), or from medstream demo, which prints a set.",
    "index.consultation_title": "Consultation — consultation.html",
    "index.consultation_text": "Doctors and experts see and hear each other. Choose camera and microphone, mute, turn the camera off, or switch to audio only on a weak connection. Each tile shows who is speaking and the quality of their connection. The host can mute or remove participants, end the consultation and start or stop recording; everyone sees the red REC indicator while it records. If the room has a bedside monitor, its ECG appears below. A dropped network reconnects by itself.",
    "index.broadcast_title": "Broadcast — broadcast.html",
    "index.broadcast_text": "Teaching sessions: the presenter is shown big, viewers only receive. A viewer can raise a hand; the host sees raised hands, lets a viewer speak (everyone then hears and sees them) and sends them back to the audience.",
    "index.wall_title": "Monitoring wall — wall.html",
    "index.wall_text": "Every bedside monitor of a ward at once: ECG drawn at 25 mm/s over a grid with a moving erase bar, heart rate with beat markers, SpO₂, NIBP, respiration rate and temperature. Alarms are coloured by priority (red high and flashing, yellow medium, cyan low) and sound until acknowledged. After a monitor's network drop the wall notes that the stream is catching up.",
    "index.automation": "For automation and support every page exposes its state on window.medstream (see docs/clients.md).",

    // 12-lead remote reading (ecg-clinic.html, ecg-reading.html, ecg12view.js)
    "title.ecg_clinic": "Remote ECG · clinic",
    "title.ecg_reading": "ECG reading centre",
    "ecg12.live_connecting": "Connecting live updates",
    "ecg12.live_on": "Live updates on",
    "ecg12.upload_title": "Send a 12-lead ECG",
    "ecg12.file": "ECG file",
    "ecg12.referral": "Referral / encounter id",
    "ecg12.patient_id": "Patient id",
    "ecg12.patient_name": "Name",
    "ecg12.sex": "Sex",
    "ecg12.sex_u": "Not given",
    "ecg12.sex_m": "Male",
    "ecg12.sex_f": "Female",
    "ecg12.age": "Age (years)",
    "ecg12.send": "Send to the ECG centre",
    "ecg12.upload_hint": "Send a WFDB record (choose the .hea and the .dat/.mat together) or the DICOM file your ECG machine exports; 250-1000 Hz, 8-60 s.",
    "ecg12.my_requests": "Our ECG requests",
    "ecg12.rhythm": "Rhythm:",
    "ecg12.findings": "Findings:",
    "ecg12.conclusion": "Conclusion:",
    "ecg12.signed_by": "Signed by {who} at {when}",
    "ecg12.open_pdf": "Open the report (PDF)",
    "ecg12.join_consultation": "Join the consultation",
    "ecg12.clinic_line": "Clinic: {clinic}",
    "ecg12.sending": "Sending…",
    "ecg12.sent": "Sent; queued as {priority}",
    "ecg12.not_sent": "Not sent",
    "ecg12.consultation_opened": "{who} opened a consultation",
    "ecg12.report_arrived": "The report for {referral} is signed",
    "ecg12.queue": "Waiting to be read",
    "ecg12.queue_empty": "No ECGs waiting",
    "ecg12.caliper_hint": "Calipers: click two points on the trace.",
    "ecg12.caliper": "interval {ms} ms ({bpm} bpm), difference {mv} mV",
    "ecg12.measurements": "Automatic measurements",
    "ecg12.st_title": "ST and amplitudes per lead (mV)",
    "ecg12.flags": "Triage flags (not diagnoses)",
    "ecg12.flags_note": "Automatic measurements and flags are aids; the reader decides.",
    "ecg12.report": "Report",
    "ecg12.findings_hint": "Findings (one per line)",
    "ecg12.claim": "Claim",
    "ecg12.save_draft": "Save draft",
    "ecg12.sign": "Sign the report",
    "ecg12.release": "Give back to the queue",
    "ecg12.open_consultation": "Open a consultation",
    "ecg12.rhythm_sinus": "Sinus rhythm",
    "ecg12.rhythm_af": "Atrial fibrillation",
    "ecg12.rhythm_flutter": "Atrial flutter",
    "ecg12.rhythm_brady": "Sinus bradycardia",
    "ecg12.rhythm_tachy": "Sinus tachycardia",
    "ecg12.rhythm_paced": "Paced rhythm",
    "ecg12.no_flags": "No flags",
    "ecg12.claimed_by": "Being read by {who}",
    "ecg12.reader_line": "ECG centre {centre} · {who}",
    "ecg12.patient_line": "{sex}, {age} y",
    "ecg12.lead": "Lead",
    "ecg12.st_j": "ST at J",
    "ecg12.st_j60": "ST at J+60 ms",
    "ecg12.r_amp": "R",
    "ecg12.s_amp": "S",
    "ecg12.claimed": "Claimed",
    "ecg12.draft_saved": "Draft saved",
    "ecg12.signed_done": "Signed; the clinic has been told",
    "ecg12.released": "Given back to the queue",
    "ecg12.scale_note": "{speed} mm/s, {gain} mm/mV",
    "ecg12.m.hr": "Heart rate",
    "ecg12.m.rhythm": "Rhythm",
    "ecg12.m.p": "P duration",
    "ecg12.m.pr": "PR",
    "ecg12.m.qrs": "QRS",
    "ecg12.m.qt": "QT",
    "ecg12.m.qtcb": "QTc (Bazett)",
    "ecg12.m.qtcf": "QTc (Fridericia)",
    "ecg12.m.axis": "QRS axis",
    "ecg12.regular": "regular",
    "ecg12.irregular": "irregular",
    "ecg12.no_p": "no P waves",
    "ecg12.wait_s": "waiting {s} s",
    "ecg12.wait_m": "waiting {m} min {s} s",
    "ecg12.wait_h": "waiting {h} h {m} min",
    "ecg12.consult_title": "The 12-lead ECG of this consultation",
    "priority.stat": "Suspected STEMI · now",
    "priority.urgent": "Urgent",
    "priority.flagged": "Flagged",
    "priority.routine": "Routine",
    "priority.unknown": "Not triaged",
    "rstate.queued": "Queued",
    "rstate.claimed": "Being read",
    "rstate.signed": "Signed",
    "rstate.unknown": "Unknown state",
    "sex.m": "male",
    "sex.f": "female",
    "sex.u": "sex not given",
    "sex.unknown": "sex not given",
    "flag.st_elevation": "ST elevation (suspected STEMI)",
    "flag.st_depression": "ST depression",
    "flag.af_suspected": "Atrial fibrillation suspected",
    "flag.qtc_prolonged": "QTc prolonged",
    "flag.wide_qrs": "Wide QRS",
    "flag.lbbb_pattern": "LBBB pattern",
    "flag.rbbb_pattern": "RBBB pattern",
    "flag.first_degree_av_block": "First-degree AV block (PR > 200 ms)",
    "flag.unknown": "Other flag",
    "rerror.line": "{what} ({detail})",
    "rerror.network": "The server cannot be reached; check the network and try again.",
    "rerror.unknown": "That did not work.",
    "rerror.not_found": "No such request, or it is not yours to see.",
    "rerror.forbidden": "Your role may not do this.",
    "rerror.conflict": "Another reader has claimed this ECG.",
    "rerror.invalid_state": "The request is not in a state that allows this.",
    "rerror.invalid_input": "Something in the form is not valid.",
    "rerror.unauthorized": "The link has no access token; use the complete link.",
    "rerror.invalid_token": "The access token is not valid; get a new link.",
    "rerror.token_expired": "This link has expired; get a new one.",
    "rerror.token_not_yet_valid": "This link is not valid yet.",
    "rerror.too_large": "The file is too large.",
    "rerror.unsupported_media_type": "That kind of upload is not accepted.",
    "rerror.invalid_ecg": "This is not a usable 12-lead ECG.",
    "rerror.not_measurable": "The ECG cannot be measured (flat or too few beats).",
    "rerror.unsupported_file": "Unsupported file: send WFDB (.hea + .dat) or a DICOM ECG.",
    "rerror.unavailable": "This server does not offer that.",
    "rerror.internal": "The server failed; try again later and tell technical support.",
  },
};

/** The language for `preferred` (navigator.languages order): the first Chinese or English entry, else Chinese. */
export function pickLanguage(preferred) {
  for (const tag of preferred || []) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return DEFAULT_LANGUAGE;
}

function storedLanguage() {
  try {
    const v = window.localStorage.getItem(STORAGE_KEY);
    return LANGUAGES.includes(v) ? v : null;
  } catch { return null; }  // storage disabled: follow the browser
}

let current = storedLanguage() || pickLanguage(navigator.languages && navigator.languages.length
  ? navigator.languages : [navigator.language]);
const listeners = [];
const reported = new Set();

/** The language in force ("zh" or "en"). */
export function language() { return current; }

/** BCP 47 locale for Intl formatting in the language in force. */
export function locale() { return LOCALES[current]; }

function render(value, vars) {
  if (value && typeof value === "object" && value.key) return t(value.key, value.vars);
  return value === undefined || value === null ? "" : String(value);
}

/** The text of `key` with `{name}` placeholders filled from `vars`. A missing key is a bug:
 *  reported once on the console (the browser tests fail on console errors), English shown. */
export function t(key, vars = {}) {
  let text = STRINGS[current][key];
  if (text === undefined) {
    if (!reported.has(key)) { reported.add(key); console.error(`i18n: no text for ${key} in ${current}`); }
    text = STRINGS.en[key] ?? key;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? render(vars[name]) : ""));
}

/** Whether `key` has a text (for keys built from server values: reasons, kinds, alarms). */
export function has(key) { return key in STRINGS[current]; }

/** Text for a server value under `prefix` (reason, role, kind, alarm...), else `${prefix}.unknown`. */
export function tOr(prefix, value, vars = {}) {
  return has(`${prefix}.${value}`) ? t(`${prefix}.${value}`, vars) : t(`${prefix}.unknown`, vars);
}

/** A translatable reference, for vars and setText: {key, vars}. */
export function ref(key, vars = {}) { return { key, vars }; }

/** A reference to the text of a server value under `prefix`, else `${prefix}.unknown`. */
export function refOr(prefix, value, vars = {}) {
  return ref(has(`${prefix}.${value}`) ? `${prefix}.${value}` : `${prefix}.unknown`, vars);
}

/** Set an element's text to `key` and keep the key on it, so a language switch re-renders it. */
export function setText(el, key, vars = {}) {
  if (!el) return;
  el.dataset.i18n = key;
  if (Object.keys(vars).length) el.dataset.i18nVars = JSON.stringify(vars); else delete el.dataset.i18nVars;
  el.textContent = t(key, vars);
}

/** Re-render every [data-i18n] text and [data-i18n-title] title below `root`; sets <html lang>. */
export function applyI18n(root = document) {
  document.documentElement.lang = LOCALES[current];
  for (const el of root.querySelectorAll("[data-i18n]")) {
    let vars = {};
    if (el.dataset.i18nVars) { try { vars = JSON.parse(el.dataset.i18nVars); } catch { vars = {}; } }
    el.textContent = t(el.dataset.i18n, vars);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
}

/** Switch language (remembered in localStorage), re-render the page, tell the listeners. */
export function setLanguage(lang) {
  if (!LANGUAGES.includes(lang)) throw new Error(`language must be one of ${LANGUAGES}, got ${lang}`);
  current = lang;
  try { window.localStorage.setItem(STORAGE_KEY, lang); } catch { /* not remembered */ }
  applyI18n();
  for (const fn of listeners) {
    try { fn(lang); } catch (e) { console.error("language listener failed", e); }
  }
}

/** Call `fn(lang)` after every language switch (pages re-render their dynamic text). */
export function onLanguageChange(fn) { listeners.push(fn); }

/** A time (Date or ms since the epoch) in the viewer's own time zone, e.g. "14:03:09". */
export function formatTime(when, { date = false } = {}) {
  const d = when instanceof Date ? when : new Date(when);
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (date) Object.assign(opts, { year: "numeric", month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

/** The language switch (a <select>), added to the page's header. */
export function mountLanguageSwitch(container = document.querySelector("header.top")) {
  if (!container || document.getElementById("lang")) return null;
  const select = document.createElement("select");
  select.id = "lang";
  select.dataset.i18nTitle = "lang.label";
  select.setAttribute("aria-label", "语言 / Language");
  for (const l of LANGUAGES) {
    const o = document.createElement("option");
    o.value = l;
    o.textContent = STRINGS[l][`lang.${l}`];
    o.selected = l === current;
    select.append(o);
  }
  select.addEventListener("change", () => setLanguage(select.value));
  container.append(select);
  return select;
}

/** Apply the language to the static page and add the switch: call once per page at load. */
export function initI18n() {
  applyI18n();
  mountLanguageSwitch();
}
