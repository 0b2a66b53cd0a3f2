// The toolbar click: capture the clicked tab, and record it in an offscreen document (the
// extension's own shape) or, with the variant "intab", in an extension page opened as a tab.
chrome.action.onClicked.addListener(async (tab) => {
  const variant = self.__variant || 'full';
  const id = await chrome.tabCapture.getMediaStreamId({ targetTabId: tab.id });
  if (variant.includes('intab')) {
    await chrome.tabs.create({ url: 'off.html', active: false });
    await new Promise((r) => setTimeout(r, 1500));
  } else {
    await chrome.offscreen.createDocument({ url: 'off.html', reasons: ['USER_MEDIA'], justification: 'recording the tab' });
  }
  chrome.runtime.sendMessage({ to: 'off', id, variant });
});
